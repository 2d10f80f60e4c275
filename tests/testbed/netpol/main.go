// The test bed's NetworkPolicy enforcer: kube-network-policies' controller
// (sigs.k8s.io/kube-network-policies/pkg/networkpolicy), one per node, in one host
// process. The bed's two nodes share the host's network stack and bridge, so each
// controller gets its own nftables table and nfqueue, and enforces the policies of
// the pods scheduled to its node; it reaches the API server with a kubeconfig
// rather than in-cluster credentials. NRI is off (the bed's containerd runs without
// it): pod IPs come from the API server.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

func main() {
	var kubeconfig, nodes string
	var firstQueue int
	klog.InitFlags(nil)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the enforcer (reads pods, namespaces, network policies)")
	flag.StringVar(&nodes, "nodes", "", "comma-separated names of the nodes whose pods to guard")
	flag.IntVar(&firstQueue, "nfqueue-id", 100, "the first node's nfqueue; the next nodes take the following numbers")
	flag.Parse()
	if kubeconfig == "" || nodes == "" {
		fmt.Fprintln(os.Stderr, "usage: w5n-netpol --kubeconfig FILE --nodes NODE[,NODE...]")
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
	done := make(chan struct{})
	names := strings.Split(nodes, ",")
	for index, node := range names {
		// One informer factory per controller: each adds its own pod IP index.
		factory := informers.NewSharedInformerFactory(client, 0)
		controller, err := networkpolicy.NewController(
			client,
			factory.Networking().V1().NetworkPolicies(),
			factory.Core().V1().Namespaces(),
			factory.Core().V1().Pods(),
			nil, nil, nil, nil,
			networkpolicy.Config{
				QueueID:             firstQueue + index,
				NodeName:            node,
				NFTableName:         "w5n-netpol-" + node,
				NetfilterBug1766Fix: true,
				NRIdisabled:         true,
			},
		)
		if err != nil {
			klog.Fatalf("controller for %s: %v", node, err)
		}
		go func() {
			if err := controller.Run(ctx); err != nil {
				klog.Errorf("controller for %s: %v", node, err)
			}
			done <- struct{}{}
		}()
		factory.Start(ctx.Done())
	}
	<-ctx.Done()
	// Each controller removes its table on the way out.
	for range names {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}
