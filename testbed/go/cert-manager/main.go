// Command cert-manager-controller runs cert-manager's own certificate and CA-issuer control
// loops, taken unchanged from the published module github.com/cert-manager/cert-manager, for
// the local test bed.
//
// Upstream's main package (cmd/controller) is a separate module that is not published on the
// Go module proxy, so this small main wires the published controllers together instead: the
// certificate life cycle (trigger, key manager, request manager, issuing, readiness, revision
// manager), the CertificateRequest approver and the CA signer, and the Issuer controller.
// No webhook, no ACME, no leader election.
//
//	cert-manager-controller [flags]                       run the controllers
//	cert-manager-controller install-crds --dir DIR [...]  create the CRDs of DIR that are missing
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each import registers its controller(s) with controllerpkg.Register.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// Issuer implementations the issuers controller can set up.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

var defaultControllers = []string{
	"issuers",
	"certificaterequests-approver",
	"certificaterequests-issuer-ca",
	"certificaterequests-issuer-selfsigned",
	"certificates-trigger",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-issuing",
	"certificates-readiness",
	"certificates-revision-manager",
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install-crds" {
		os.Exit(installCRDs(os.Args[2:]))
	}
	var (
		kubeconfig  = flag.String("kubeconfig", "", "path to a kubeconfig")
		namespace   = flag.String("namespace", "", "namespace to watch (empty: all namespaces)")
		clusterNS   = flag.String("cluster-resource-namespace", "cert-manager", "namespace of ClusterIssuers' secrets")
		ownerRef    = flag.Bool("enable-certificate-owner-ref", false, "make each Certificate the owner of its Secret")
		leaderElect = flag.Bool("leader-elect", false, "accepted for compatibility; this build never elects a leader")
		controllers = flag.String("controllers", strings.Join(defaultControllers, ","), "controllers to run")
		workers     = flag.Int("workers", 2, "workers per controller")
		minBackoff  = flag.Duration("certificate-request-minimum-backoff-duration", time.Hour, "first retry delay after a failed request")
		listOnly    = flag.Bool("list-controllers", false, "print the known controllers and exit")
		healthz     = flag.String("healthz-listen-address", "127.0.0.1:20403", "address of /healthz and /readyz")
	)
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	flag.Func("v", "log verbosity", func(v string) error { return klogFlags.Set("v", v) })
	flag.Parse()

	if *listOnly {
		names := []string{}
		for name := range controllerpkg.Known() {
			names = append(names, name)
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, "\n"))
		return
	}
	if *leaderElect {
		fmt.Fprintln(os.Stderr, "--leader-elect=true is not supported by this test-bed build")
		os.Exit(2)
	}

	logf.InitLogs()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := logf.Log.WithName("cert-manager-controller")
	ctx = logf.NewContext(ctx, log)

	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		Namespace:          *namespace,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: *clusterNS},
		CertificateOptions: controllerpkg.CertificateOptions{
			EnableOwnerRef:                           *ownerRef,
			CertificateRequestMinimumBackoffDuration: *minBackoff,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		log.Error(err, "cannot build the controller context")
		os.Exit(1)
	}

	type running struct {
		name string
		ctrl controllerpkg.Interface
	}
	var started []running
	for _, name := range strings.Split(*controllers, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if *namespace != "" && name == "clusterissuers" {
			log.Info("skipping clusterissuers: it needs all namespaces")
			continue
		}
		construct, ok := controllerpkg.Known()[name]
		if !ok {
			log.Error(nil, "unknown controller", "name", name)
			os.Exit(2)
		}
		ctrl, err := construct(factory)
		if err != nil {
			log.Error(err, "cannot construct controller", "name", name)
			os.Exit(1)
		}
		started = append(started, running{name, ctrl})
	}

	// The informer factories are shared by every Context the factory builds: start them once,
	// after every controller has asked for its informers.
	shared, err := factory.Build("informers")
	if err != nil {
		log.Error(err, "cannot build the informer context")
		os.Exit(1)
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())

	// /healthz: the process serves; /readyz: every informer cache has synced.
	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "informer caches not synced yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	server := &http.Server{Addr: *healthz, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Error(err, "health server stopped", "address", *healthz)
			stop()
		}
	}()
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()

	var wg sync.WaitGroup
	for _, r := range started {
		wg.Go(func() {
			log.Info("starting controller", "name", r.name)
			if err := r.ctrl.Run(*workers, ctx); err != nil {
				log.Error(err, "controller stopped", "name", r.name)
				stop()
			}
		})
	}
	shared.SharedInformerFactory.WaitForCacheSync(ctx.Done())
	shared.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())
	if ctx.Err() == nil {
		ready.Store(true)
		log.Info("all controllers started, caches synced", "count", len(started), "namespace", *namespace)
	}
	wg.Wait()
	logf.FlushLogs()
}

// installCRDs creates each CustomResourceDefinition of --dir that the cluster does not have yet
// and waits until it is Established. An existing CRD of the same name is left as it is.
func installCRDs(args []string) int {
	fs := flag.NewFlagSet("install-crds", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig")
	dir := fs.String("dir", "", "directory of CRD manifests (*.yaml)")
	_ = fs.Parse(args)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "install-crds: "+format+"\n", a...)
		return 1
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fail("cannot load the kubeconfig: %v", err)
	}
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return fail("cannot build a client: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(*dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fail("no CRD manifests in %q", *dir)
	}
	crds := client.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return fail("%v", err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
			return fail("%s: %v", file, err)
		}
		name := obj.GetName()
		if _, err := crds.Get(ctx, name, metav1.GetOptions{}); err == nil {
			fmt.Printf("%s: exists, left as it is\n", name)
			continue
		} else if !apierrors.IsNotFound(err) {
			return fail("cannot read %s: %v", name, err)
		}
		if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fail("cannot create %s: %v", name, err)
		}
		for {
			got, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err == nil && established(got) {
				break
			}
			if ctx.Err() != nil {
				return fail("%s was created but is not Established", name)
			}
			time.Sleep(200 * time.Millisecond)
		}
		fmt.Printf("%s: created\n", name)
	}
	return 0
}

func established(crd *unstructured.Unstructured) bool {
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
