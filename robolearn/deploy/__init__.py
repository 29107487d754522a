"""Deploy side: policy bundles, robot interfaces, low-level controllers, the safety layer and the runtime.

Nothing here imports training code (`robolearn.learn`)."""
