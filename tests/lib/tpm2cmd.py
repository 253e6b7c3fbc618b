"""Raw TPM 2.0 commands for the Python tests and benchmarks: the marshalling, in one place."""

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_ALG_SHA256 = 0x000B


def u16(v):
    return v.to_bytes(2, "big")


def u32(v):
    return v.to_bytes(4, "big")


def cmd(tag, cc, body):
    """A command: header (tag, size, code) and body."""
    return u16(tag) + u32(10 + len(body)) + u32(cc) + body


def pw_cmd(cc, handles, params, session_attrs=0):
    """A command whose handles are authorized by one empty-password session (TPM_RS_PW)."""
    auth = u32(TPM_RS_PW) + u16(0) + bytes([session_attrs]) + u16(0)
    return cmd(TPM_ST_SESSIONS, cc, b"".join(u32(h) for h in handles) + u32(len(auth)) + auth + params)


def rc_of(response):
    return int.from_bytes(response[6:10], "big")


def get_random(n):
    return cmd(TPM_ST_NO_SESSIONS, 0x17B, u16(n))


def pcr_extend(pcr, sha256_digest):
    return pw_cmd(0x182, [pcr], u32(1) + u16(TPM_ALG_SHA256) + sha256_digest)


def create_primary(rsa):
    """CreatePrimary in the owner hierarchy: RSA 2048 or ECC P-256 storage key, AES-128-CFB."""
    pub = u16(1 if rsa else 0x23) + u16(TPM_ALG_SHA256) + u32(0x00030072) + u16(0)
    pub += u16(6) + u16(128) + u16(0x43) + u16(0x10)  # AES-128-CFB, scheme NULL
    pub += (u16(2048) + u32(0) + u16(0)) if rsa else (u16(3) + u16(0x10) + u16(0) + u16(0))
    params = u16(4) + u16(0) + u16(0) + u16(len(pub)) + pub + u16(0) + u32(0)
    return pw_cmd(0x131, [TPM_RH_OWNER], params)


# NV index attributes: OWNERWRITE | OWNERREAD | NO_DA
NV_OWNER_RW_NO_DA = 0x00000002 | 0x00020000 | 0x02000000


def nv_define(index, size, attrs=NV_OWNER_RW_NO_DA, session_attrs=0):
    pub = u32(index) + u16(TPM_ALG_SHA256) + u32(attrs) + u16(0) + u16(size)  # no policy
    return pw_cmd(0x12A, [TPM_RH_OWNER], u16(0) + u16(len(pub)) + pub, session_attrs)


def nv_write(index, data, session_attrs=0):
    return pw_cmd(0x137, [TPM_RH_OWNER, index], u16(len(data)) + data + u16(0), session_attrs)


def nv_read(index, size, session_attrs=0):
    return pw_cmd(0x14E, [TPM_RH_OWNER, index], u16(size) + u16(0), session_attrs)
