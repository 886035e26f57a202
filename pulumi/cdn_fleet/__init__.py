"""The cdnctl fleet: Pulumi components for the hosts of each region (see pulumi/README.md)."""
