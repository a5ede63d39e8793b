"""The engine's bodies: code that runs only while its caller holds the workload's lock.

Nothing here takes a workload's lock or imports an entry point (`engine.*`),
so the verbs that recurse (a deploy's backup, a restore's redeploy, a
recovery's archive) call each other here without a cycle.
"""
