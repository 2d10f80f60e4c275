"""The test bed: a real Kubernetes control plane and two real nodes (kubelet, containerd)."""
