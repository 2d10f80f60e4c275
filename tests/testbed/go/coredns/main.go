// CoreDNS with only the plugins the test bed's Corefile uses (tests/testbed/nodes.py),
// the custom build CoreDNS documents: the full plugin set pulls in every cloud
// provider's SDK and takes minutes longer to build on the 2-core machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order plugins run in, as in CoreDNS's own plugin.cfg.
func init() {
	dnsserver.Directives = []string{"errors", "health", "ready", "kubernetes", "cache"}
}

func main() {
	coremain.Run()
}
