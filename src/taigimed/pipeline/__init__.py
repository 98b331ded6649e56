"""The Kubeflow pipeline's steps, its local runner and its submitter."""
