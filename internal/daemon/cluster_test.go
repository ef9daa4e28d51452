package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestLeaderElectionTimingsValidated(t *testing.T) {
	if err := DefaultLeaderElection().Validate(); err != nil {
		t.Fatalf("client-go's defaults: %v", err)
	}
	lab := LeaderElection{Enabled: true, LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}
	if err := lab.Validate(); err != nil {
		t.Fatalf("the lab's timings: %v", err)
	}
	for _, bad := range []LeaderElection{
		{Enabled: true, LeaseDuration: 2 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond},
		{Enabled: true, LeaseDuration: 3 * time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond},
		{Enabled: true, LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second},
	} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--leader-elect-") {
			t.Errorf("%+v: %v, want an error naming the flag", bad, err)
		}
	}
}

func TestServerOptionsValidate(t *testing.T) {
	base := ServerOptions{EtcdName: "s1", LeaderElection: DefaultLeaderElection()}
	if err := base.validate(); err != nil {
		t.Fatalf("single member: %v", err)
	}
	for want, o := range map[string]ServerOptions{
		"needs --etcd-advertise-address": {EtcdName: "s1", EtcdInitialCluster: "s1=https://10.0.0.1:2380", LeaderElection: DefaultLeaderElection()},
		"exclude each other":             {EtcdName: "s1", EtcdAdvertiseAddress: "10.0.0.1", EtcdEndpoints: []string{"http://x:2379"}, LeaderElection: DefaultLeaderElection()},
		"is not an IP":                   {EtcdName: "s1", EtcdAdvertiseAddress: "dc1.example", LeaderElection: DefaultLeaderElection()},
		"--api-servers":                  {EtcdName: "s1", EtcdAdvertiseAddress: "10.0.0.1", APIServers: []string{"10.0.0.1:6443"}, LeaderElection: DefaultLeaderElection()},
		"--etcd-name":                    {LeaderElection: DefaultLeaderElection()},
	} {
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error saying %q", o, err, want)
		}
	}
}

func TestKubeconfigServersListOwnURLFirst(t *testing.T) {
	o := ServerOptions{APIServers: []string{"https://10.0.1.10:6443", "https://10.0.2.10:6443", "https://10.0.3.10:6443"}}
	got := strings.Join(o.servers("https://10.0.2.10:6443"), ",")
	if got != "https://10.0.2.10:6443,https://10.0.1.10:6443,https://10.0.3.10:6443" {
		t.Fatalf("servers %s", got)
	}
	if got := o.identity("https://10.0.2.10:6443"); got == "" {
		t.Fatal("empty identity")
	}
}
