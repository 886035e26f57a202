-- edge_header entry point: all logic lives in cdnctl.edge_headers.
require("cdnctl.edge_headers").header_filter()
