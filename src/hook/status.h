#pragma once
#include <string>

namespace vtpm {

// One row per vTPM recorded under run_root: a table, or a JSON array.
std::string render_status(const std::string& run_root, bool json);

}  // namespace vtpm
