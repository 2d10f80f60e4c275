// The test bed's NetworkPolicy enforcer: kube-network-policies' controller
// (sigs.k8s.io/kube-network-policies/pkg/networkpolicy) as one host process.
//
// The controller decides each new connection it reads from an nfqueue: it finds the
// source and destination pods by IP among all pods (so one controller serves both of
// the bed's nodes, which share the host's network stack and bridge), applies the
// egress policies of the one and the ingress policies of the other, and accepts or
// drops. Upstream it also diverts the packets into the queue with an nftables rule;
// this kernel has no nftables `queue` expression, so that rule fails here (logged at
// every resync) and the bed diverts with iptables' NFQUEUE target instead
// (tests/testbed_api/test_network_policy_enforced.py). A kubeconfig stands in for
// in-cluster credentials; NRI is off (the bed's containerd runs without it): pod IPs
// come from the API server.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

func main() {
	var kubeconfig, node string
	var queue int
	klog.InitFlags(nil)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the enforcer (reads pods, namespaces, network policies)")
	flag.StringVar(&node, "node", "", "a node name (upstream scopes its nftables set by it; the verdicts do not depend on it)")
	flag.IntVar(&queue, "nfqueue-id", 100, "the nfqueue the packets to decide arrive on")
	flag.Parse()
	if kubeconfig == "" || node == "" {
		fmt.Fprintln(os.Stderr, "usage: w5n-netpol --kubeconfig FILE --node NAME [--nfqueue-id N]")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	config.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	factory := informers.NewSharedInformerFactory(client, 0)
	controller, err := networkpolicy.NewController(
		client,
		factory.Networking().V1().NetworkPolicies(),
		factory.Core().V1().Namespaces(),
		factory.Core().V1().Pods(),
		nil, nil, nil, nil,
		networkpolicy.Config{
			QueueID:             queue,
			NodeName:            node,
			NFTableName:         "w5n-netpol",
			NetfilterBug1766Fix: false,
			NRIdisabled:         true,
		},
	)
	if err != nil {
		klog.Fatalf("controller: %v", err)
	}
	done := make(chan struct{})
	go func() {
		if err := controller.Run(ctx); err != nil {
			klog.Errorf("controller: %v", err)
		}
		close(done)
	}()
	factory.Start(ctx.Done())
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
