// Command etcdctl is upstream etcdctl's entry point, built from the pinned
// go.etcd.io/etcd/etcdctl/v3 module by e2e/tools/build-tools.sh (its go.mod
// has replace directives, so `go install …@version` refuses it).
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
	ctlv3.MustStart()
}
