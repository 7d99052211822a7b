"""An L7 balancer in front of several Triton replicas: nginx, configured from typed objects.

`nginx_config` renders the configuration, `nginx` runs the process (a child that dies with its
parent), `fleet` starts N local replicas plus the balancer (what `glimp serve --replicas N` runs).
"""
