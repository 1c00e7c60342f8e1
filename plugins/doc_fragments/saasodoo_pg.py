# -*- coding: utf-8 -*-
# Documentation of the PostgreSQL connection options (POSTGRES_COMMON_ARGS in
# plugins/module_utils/saasodoo_pg.py), shared by the modules that accept them:
#   extends_documentation_fragment:
#     - saasodoo_pg
# A module that says more about one option (which database, which role) documents that option
# itself: its keys replace the fragment's for that option, the rest (type, default) stay.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server, or the directory of its unix socket.
      - Default from the environment variable E(PGHOST), else C(localhost).
    type: str
    default: localhost
    aliases: [host]
  login_port:
    description: Port of the PostgreSQL server. Default from E(PGPORT), else 5432.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description: Role to log in as. Default from E(PGUSER), else C(postgres).
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Default from E(PGPASSWORD); libpq also reads C(~/.pgpass).
      - Never returned, logged or put in a message.
    type: str
  login_db:
    description: Database to connect to. Default from E(PGDATABASE), else C(postgres).
    type: str
    default: postgres
    aliases: [db]
  connect_timeout:
    description: Seconds to wait for the PostgreSQL connection (libpq waits at least 2).
    type: int
    default: 5
  ssl_mode:
    description: libpq C(sslmode).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
"""
