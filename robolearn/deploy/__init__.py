"""Deploy side: policy bundles, robot interfaces, low-level controllers, the safety layer and the runtime.

Nothing here imports training code (`robolearn.learn`) or the simulator: it runs with `robolearn[deploy]`
(numpy, onnxruntime, yaml; no torch or MuJoCo). The MuJoCo twin is `robolearn.twin`."""
