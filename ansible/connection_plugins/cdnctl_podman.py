# containers.podman.podman with pipelining: one `podman exec -i` per module run.
#
# The collection's plugin declares has_pipelining = False because its exec_command does not
# pass `-i` to `podman exec`, so a pipelined module never reached the container's stdin.
# Without pipelining every task costs five podman execs on each host (home directory, temp
# directory, chmod, the module, cleanup) and a `podman mount`; this plugin passes the module
# on stdin when Ansible pipelines it, so a task costs one exec. Everything else (mount, put
# and fetch through the mounted root filesystem, the options) is the collection's.
# Pipelining needs Ansible's `pipelining = True` (ansible/ansible.cfg sets it) and no
# `requiretty` (containers have no sudo at all).
from __future__ import annotations

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = """
    name: cdnctl_podman
    short_description: containers.podman.podman with pipelining (one podman exec per task)
    description:
        - The containers.podman.podman connection, with the module sent on the stdin of
          C(podman exec -i) when Ansible pipelines it.
    extends_documentation_fragment:
        - connection_pipelining
    options:
      remote_addr:
        description:
          - The ID of the container you want to access.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description:
          - User (name or UID) that runs commands inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description:
          - Extra arguments to pass to the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description:
          - Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""


class Connection(PodmanConnection):
    transport = "cdnctl_podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        """`podman exec`, with `-i` when there is input for the command (a pipelined module)."""
        if in_data is None:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "-i"]
        if self.user:
            args.extend(("--user", self.user))
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        return self._podman(args, argv, in_data)
