-- admin entry point: all logic lives in cdnctl.admin.
require("cdnctl.admin").handle()
