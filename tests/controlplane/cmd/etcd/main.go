// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 at the version that
// Kubernetes' own go.mod requires, so the tests run the pair Kubernetes is released with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
