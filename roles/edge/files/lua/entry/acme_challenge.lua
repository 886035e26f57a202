-- acme_challenge entry point: all logic lives in cdnctl.certs.
require("cdnctl.certs").serve_challenge()
