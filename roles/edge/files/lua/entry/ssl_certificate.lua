-- ssl_certificate entry point: all logic lives in cdnctl.certs.
require("cdnctl.certs").select()
