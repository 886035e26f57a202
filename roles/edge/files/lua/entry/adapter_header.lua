-- adapter_header entry point: all logic lives in cdnctl.ttl.
require("cdnctl.ttl").header_filter()
