-- route entry point: all logic lives in cdnctl.router.
require("cdnctl.router").route()
