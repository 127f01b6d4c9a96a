"""The same steps as update-mariadb.py, one at a time: a `wait` after every push (what a
Kolla-style script does: stop each service, then update MariaDB, then restart each service).
bench/bench_reconfig.py compares the two.
"""

STOP_ORDER = ["glance", "neutron", "nova", "keystone", "mariadb"]
START_ORDER = ["mariadb", "keystone", "glance", "neutron", "nova"]


def reconfigure(r):
    for service in STOP_ORDER:
        r.push(service, "stop")
        r.wait(service)
    for service in START_ORDER:
        r.push(service, "update")
        r.wait(service)
