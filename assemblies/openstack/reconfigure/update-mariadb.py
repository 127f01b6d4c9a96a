"""Update MariaDB's configuration while the services that use it are paused.

    madeus plan assemblies/openstack/openstack.mad \
        --reconfigure assemblies/openstack/reconfigure/update-mariadb.py
    madeus reconfigure assemblies/openstack/openstack.mad \
        assemblies/openstack/reconfigure/update-mariadb.py \
        -i assemblies/openstack/inventory.yml --simulate --time-scale 0.02

Every service that uses the database is paused (`stop`: its role's stop.yml), MariaDB is
stopped, reconfigured and started again (`update`: config.yml, then deploy-containers.yml, whose
handlers restart it with the new configuration), and the services resume (`update`: their
config.yml and deploy-containers.yml).

The order comes from the port bindings, not from this script:
- a service uses `mariadb.db` (and, but for Keystone, `keystone.identity`) while it runs, in
  `deployed`; MariaDB's `stop` leaves its `db` group, so it waits until every one of them has
  stopped; Keystone's `stop` leaves its `identity` group, so it waits for Glance, Neutron, Nova;
- each service's `start` is bound to its `db` (and `identity`) ports: Keystone starts once
  MariaDB runs again, the others once MariaDB and Keystone both do.
The one `wait` below is what the verifier asked for: without it a service may stop and start
again before MariaDB has even stopped (its providers are still there), and then MariaDB waits
for ever (`madeus reconfigure` refuses that program and prints the interleaving).
"""

USERS = ["glance", "neutron", "nova", "keystone"]  # every user of mariadb.db


def reconfigure(r):
    for service in USERS:
        r.push(service, "stop")
    r.push("mariadb", "stop")
    r.wait("mariadb")  # every user has stopped: MariaDB could not stop before
    r.push("mariadb", "update")
    for service in USERS:
        r.push(service, "update")  # each starts once what it uses runs again
    r.wait_all()
