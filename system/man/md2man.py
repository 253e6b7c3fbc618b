#!/usr/bin/env python3
"""Renders one section of a Markdown document as a man page (roff), so that a man page and
the docs have one source. Handles what docs/ uses: headings, paragraphs, bullet lists,
fenced code, tables, `code`, **bold**, *italic* and [links](...).

  md2man.py --doc docs/configuration.md --heading "## Policy file" --name vtpm-hook-policy \
            --section 5 --summary "the administrator's policy file" --see-also "vtpm-hook(8)"
"""
import argparse
import re
import sys


def inline(text):
    out = []
    # split on code spans first: nothing inside them is markup
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        part = part.replace("\\", "\\e")
        if i % 2:
            out.append("\\fB" + part.replace("-", "\\-") + "\\fR")
            continue
        part = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
        part = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\\fI\1\\fR", part)
        out.append(part)
    return "".join(out)


def line(text):
    # a roff line must not start with a control character
    return "\\&" + text if text[:1] in (".", "'") else text


def cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def render(lines, level):
    out, i = [], 0
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.extend(line(inline(p)) for p in para)
            para.clear()

    while i < len(lines):
        s = lines[i]
        if s.startswith("```"):
            flush()
            out += [".PP", ".nf", ".RS 4"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(line(lines[i].replace("\\", "\\e")))
                i += 1
            out += [".RE", ".fi"]
        elif re.match(r"#{%d,} " % (level + 1), s):
            flush()
            out.append(".SS " + inline(s.split(" ", 1)[1]))
        elif s.startswith("|"):
            flush()
            head = cells(s)
            i += 2  # the header and its |---| line
            while i < len(lines) and lines[i].startswith("|"):
                row = cells(lines[i])
                out += [".TP", inline(row[0])]
                out.append("\n.br\n".join(
                    line("\\fI" + h + ":\\fR " + inline(c)) for h, c in zip(head[1:], row[1:])))
                i += 1
            continue
        elif re.match(r"\s*- ", s):
            flush()
            item = [re.sub(r"^\s*- ", "", s)]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            out += [".IP \\(bu 2", line(inline(" ".join(item)))]
        elif not s.strip():
            flush()
        else:
            para.append(s.strip())
        i += 1
    flush()
    return out


def main():
    ap = argparse.ArgumentParser()
    for a in ("--doc", "--heading", "--name", "--section", "--summary"):
        ap.add_argument(a, required=True)
    ap.add_argument("--see-also", default="")
    ap.add_argument("--version", default="")
    ap.add_argument("--output", help="write here instead of stdout")
    args = ap.parse_args()
    with open(args.doc, encoding="utf-8") as f:
        doc = f.read().splitlines()
    try:
        start = doc.index(args.heading)
    except ValueError:
        sys.exit(f"md2man: no heading {args.heading!r} in {args.doc}")
    level = len(args.heading.split(" ", 1)[0])
    end, fenced = start + 1, False
    while end < len(doc):
        if doc[end].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,%d} " % level, doc[end]):  # a "# comment" in code is no heading
            break
        end += 1
    name = args.name.replace("-", "\\-")
    out = [f'.TH {args.name.upper()} {args.section} "" "vtpm-hook {args.version}" "vtpm-hook"',
           ".SH NAME", f"{name} \\- {args.summary}", ".SH DESCRIPTION"]
    out += render(doc[start + 1:end], level)
    if args.see_also:
        out += [".SH SEE ALSO", ", ".join(
            re.sub(r"^(.*)\((\d)\)$", r"\\fB\1\\fR(\2)", s.strip().replace("-", "\\-"))
            for s in args.see_also.split(","))]
    text = "\n".join(out) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


main()
