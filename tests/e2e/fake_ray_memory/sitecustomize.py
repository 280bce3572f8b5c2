"""Loaded (through PYTHONPATH) by the Ray head of the autoscaler test, and so by its autoscaler.

Ray's fake multi-node provider hands a node type's `memory` to the machine it starts as a
custom resource, which Ray refuses ("`memory` cannot be a custom resource"), so its machines
could not say how much memory they hold and no demand for memory could ever be met. This
moves `memory` to where a real `ray start --memory` puts it. Nothing else is changed.
"""

try:
    from ray._private.parameter import RayParams
except ImportError:  # a process without Ray: nothing to mend
    RayParams = None

if RayParams is not None:
    _init = RayParams.__init__

    def _init_with_memory(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        resources = kwargs.get("resources")
        if resources and "memory" in resources and kwargs.get("memory") is None:
            resources = dict(resources)
            kwargs["memory"] = resources.pop("memory")
            kwargs["resources"] = resources
        _init(self, *args, **kwargs)

    RayParams.__init__ = _init_with_memory
