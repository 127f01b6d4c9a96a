"""Rotate Keystone's fernet keys and restart it, the services that use it paused meanwhile.

    madeus plan assemblies/openstack-lab/openstack-lab.mad \
        --reconfigure assemblies/openstack-lab/reconfigure/rotate-keystone-keys.py
    madeus reconfigure assemblies/openstack-lab/openstack-lab.mad \
        assemblies/openstack-lab/reconfigure/rotate-keystone-keys.py -i /tmp/oslab/inventory.yml

Run it where `madeus deploy` ran (the journal there says what is deployed). Glance,
Placement, Neutron and Nova stop (`stop`: their processes, by pidfile), Keystone stops once none
of them runs any more (its `identity` group may not be left while a connected service is in
`deployed`), rotates its keys and starts again (`update`: fernet_rotate, uwsgi, a token), and the
services start again (`update`), each once Keystone is back (their `restart` uses `identity`).
The order comes from the port bindings; the `wait` is the one the verifier needs: without it a
service could stop and start again before Keystone has stopped, and Keystone would wait for ever.
"""

USERS = ["glance", "placement", "neutron", "nova"]  # every user of keystone.identity


def reconfigure(r):
    for service in USERS:
        r.push(service, "stop")
    r.push("keystone", "stop")
    r.wait("keystone")  # every user has stopped: Keystone could not stop before
    r.push("keystone", "update")
    for service in USERS:
        r.push(service, "update")  # each starts once Keystone runs again
    r.wait_all()
