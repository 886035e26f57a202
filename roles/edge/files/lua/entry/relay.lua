-- relay entry point: all logic lives in cdnctl.interim.
require("cdnctl.interim").relay()
