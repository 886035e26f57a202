-- edge_log entry point: all logic lives in cdnctl.logphase.
require("cdnctl.logphase").log()
