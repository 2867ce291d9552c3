"""The cluster as the scheduler and the consolidator see it: the etcd view (list + watch),
the policy core's views built from it, the requests a scheduler owns, channels to workers."""
