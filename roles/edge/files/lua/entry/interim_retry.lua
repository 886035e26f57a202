-- interim_retry entry point: all logic lives in cdnctl.interim.
require("cdnctl.interim").retry()
