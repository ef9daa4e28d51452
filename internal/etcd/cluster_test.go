package etcd

import (
	"strings"
	"testing"
)

func TestParseInitialCluster(t *testing.T) {
	peers, err := ParseInitialCluster("s1=https://10.0.1.10:2380, s2=https://10.0.2.10:2380,s3=https://10.0.3.10:2380")
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 || peers[1].Name != "s2" || peers[1].PeerURL.Host != "10.0.2.10:2380" {
		t.Fatalf("peers %+v", peers)
	}
	for in, want := range map[string]string{
		"":                             "empty",
		"s1":                           "NAME=https://IP:PORT",
		"s1=http://10.0.0.1:2380":      "https://IP:PORT",
		"s1=https://host.example:2380": "https://IP:PORT",
		"s1=https://10.0.0.1":          "https://IP:PORT",
		"s1=https://10.0.0.1:1,s1=https://10.0.0.2:1": "named twice",
	} {
		if _, err := ParseInitialCluster(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInitialCluster(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func TestClientURLsPutOwnMemberFirst(t *testing.T) {
	peers, err := ParseInitialCluster("s1=https://10.0.1.10:2380,s2=https://10.0.2.10:2380,s3=https://10.0.3.10:2380")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(ClientURLs(peers, "s2", 2379), ",")
	want := "https://10.0.2.10:2379,https://10.0.1.10:2379,https://10.0.3.10:2379"
	if got != want {
		t.Fatalf("client URLs %s, want %s", got, want)
	}
}
