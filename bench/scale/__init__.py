"""Scale-out benchmark: affinity vs round robin over local replicas behind nginx, and a failover."""
