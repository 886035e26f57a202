-- refetch entry point: all logic lives in cdnctl.upstream.
require("cdnctl.upstream").refetch()
