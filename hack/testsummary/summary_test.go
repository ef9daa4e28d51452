package main

import (
	"os"
	"strings"
	"testing"
)

// goTestJSON is synthetic `go test -json` output: one passing test, one skipped test that logged
// before skipping with a two-line message, a skipped subtest, and a package without tests.
const goTestJSON = `{"Action":"start","Package":"kumo.dev/kumo/a"}
{"Action":"run","Package":"kumo.dev/kumo/a","Test":"TestPasses"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestPasses","Output":"=== RUN   TestPasses\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestPasses","Output":"--- PASS: TestPasses (0.00s)\n"}
{"Action":"pass","Package":"kumo.dev/kumo/a","Test":"TestPasses","Elapsed":0}
{"Action":"run","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Output":"=== RUN   TestNeedsTool\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Output":"    a_test.go:10: looking for the tool\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Output":"    a_test.go:12: frobnicate not installed\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Output":"        (apt-get install frob)\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Output":"--- SKIP: TestNeedsTool (0.00s)\n"}
{"Action":"skip","Package":"kumo.dev/kumo/a","Test":"TestNeedsTool","Elapsed":0}
{"Action":"run","Package":"kumo.dev/kumo/a","Test":"TestTable"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestTable","Output":"=== RUN   TestTable\n"}
{"Action":"run","Package":"kumo.dev/kumo/a","Test":"TestTable/kvm"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestTable/kvm","Output":"=== RUN   TestTable/kvm\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestTable/kvm","Output":"    a_test.go:30: /dev/kvm not usable\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestTable/kvm","Output":"    --- SKIP: TestTable/kvm (0.00s)\n"}
{"Action":"skip","Package":"kumo.dev/kumo/a","Test":"TestTable/kvm","Elapsed":0}
{"Action":"output","Package":"kumo.dev/kumo/a","Test":"TestTable","Output":"--- PASS: TestTable (0.00s)\n"}
{"Action":"pass","Package":"kumo.dev/kumo/a","Test":"TestTable","Elapsed":0}
{"Action":"output","Package":"kumo.dev/kumo/a","Output":"PASS\n"}
{"Action":"output","Package":"kumo.dev/kumo/a","Output":"ok  \tkumo.dev/kumo/a\t0.01s\n"}
{"Action":"pass","Package":"kumo.dev/kumo/a","Elapsed":0.01}
{"Action":"start","Package":"kumo.dev/kumo/b"}
{"Action":"output","Package":"kumo.dev/kumo/b","Output":"?   \tkumo.dev/kumo/b\t[no test files]\n"}
{"Action":"skip","Package":"kumo.dev/kumo/b","Elapsed":0}
`

func allowListOf(t *testing.T, text string) *allowList {
	t.Helper()
	l, err := parseAllowList("skips-allowed.txt", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func run(t *testing.T, input string, allow *allowList) (result, string) {
	t.Helper()
	var out strings.Builder
	res, err := summarize(strings.NewReader(input), &out, allow)
	if err != nil {
		t.Fatal(err)
	}
	return res, out.String()
}

func TestAllowedSkipsPassAndAreStillNamed(t *testing.T) {
	allow := allowListOf(t, `# comment
kumo.dev/kumo/a  TestNeedsTool   frob is optional here
kumo.dev/kumo/a  TestTable/.*    KVM is not usable in CI
`)
	res, out := run(t, goTestJSON, allow)
	if !res.ok() {
		t.Errorf("every skip is allowed, but the summary fails:\n%s", out)
	}
	for _, want := range []string{
		"--- SKIP: kumo.dev/kumo/a TestNeedsTool — allowed (skips-allowed.txt:2: frob is optional here)\n" +
			"    a_test.go:12: frobnicate not installed\n        (apt-get install frob)\n",
		"--- SKIP: kumo.dev/kumo/a TestTable/kvm — allowed (skips-allowed.txt:3: KVM is not usable in CI)\n" +
			"    a_test.go:30: /dev/kvm not usable\n",
		"ok  \tkumo.dev/kumo/a\t0.01s\n",
		"2 passed, 0 failed, 2 skipped (0 not allowed)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "looking for the tool") {
		t.Errorf("the skip reason is the message the test skipped with, not its earlier logs:\n%s", out)
	}
}

func TestUnlistedSkipFailsWithItsNameAndReason(t *testing.T) {
	allow := allowListOf(t, "kumo.dev/kumo/a  TestTable/kvm  KVM is not usable in CI\n")
	res, out := run(t, goTestJSON, allow)
	if res.ok() {
		t.Errorf("a skip that is not on the allow-list must fail the summary:\n%s", out)
	}
	for _, want := range []string{
		"--- SKIP: kumo.dev/kumo/a TestNeedsTool — NOT ALLOWED: not on the allow-list skips-allowed.txt\n" +
			"    a_test.go:12: frobnicate not installed\n",
		"2 passed, 0 failed, 2 skipped (1 not allowed)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// Without an allow-list no skip is allowed.
	if res, out := run(t, goTestJSON, nil); res.ok() || !strings.Contains(out, "(2 not allowed)") {
		t.Errorf("without an allow-list: ok=%v\n%s", res.ok(), out)
	}
}

func TestAllowListEntriesMatchPackageAndWholeTestName(t *testing.T) {
	for _, list := range []string{
		"kumo.dev/kumo/a  TestNeeds  a prefix is not the name\n",
		"kumo.dev/kumo/a  NeedsTool  a suffix is not the name\n",
		"kumo.dev/kumo/b  TestNeedsTool  another package\n",
		"kumo.dev/kumo/a  TestTable  a parent does not cover its subtests\n",
	} {
		allow := allowListOf(t, list+"kumo.dev/kumo/a  TestTable/kvm  listed\n")
		if res, out := run(t, goTestJSON, allow); res.ok() || res.unallowed() != 1 {
			t.Errorf("allow-list %q admitted TestNeedsTool:\n%s", list, out)
		}
	}
	allow := allowListOf(t, "kumo.dev/kumo/a  TestNeedsTool  listed\nkumo.dev/kumo/c  TestGone  no longer skips\nkumo.dev/kumo/a  TestTable/kvm  listed\n")
	if _, out := run(t, goTestJSON, allow); !strings.Contains(out, "note: skips-allowed.txt:2 (kumo.dev/kumo/c TestGone) matched no skipped test") {
		t.Errorf("an entry that matched nothing is not reported:\n%s", out)
	}
}

func TestAllowListEntriesNeedAReason(t *testing.T) {
	for list, want := range map[string]string{
		"kumo.dev/kumo/a  TestNeedsTool\n":            `skips-allowed.txt:1: want "PACKAGE TEST-PATTERN REASON"`,
		"# ok\nkumo.dev/kumo/a  Test(  bad pattern\n": `skips-allowed.txt:2: test pattern "Test("`,
	} {
		if _, err := parseAllowList("skips-allowed.txt", strings.NewReader(list)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse %q = %v, want %q", list, err, want)
		}
	}
}

func TestFailuresAndBuildErrorsAreShown(t *testing.T) {
	input := `{"ImportPath":"kumo.dev/kumo/c [kumo.dev/kumo/c.test]","Action":"build-output","Output":"# kumo.dev/kumo/c [kumo.dev/kumo/c.test]\n"}
{"ImportPath":"kumo.dev/kumo/c [kumo.dev/kumo/c.test]","Action":"build-output","Output":"c/c.go:1:34: cannot use \"x\" as int value\n"}
{"ImportPath":"kumo.dev/kumo/c [kumo.dev/kumo/c.test]","Action":"build-fail"}
{"Action":"start","Package":"kumo.dev/kumo/c"}
{"Action":"output","Package":"kumo.dev/kumo/c","Output":"FAIL\tkumo.dev/kumo/c [build failed]\n"}
{"Action":"fail","Package":"kumo.dev/kumo/c","Elapsed":0,"FailedBuild":"kumo.dev/kumo/c [kumo.dev/kumo/c.test]"}
{"Action":"run","Package":"kumo.dev/kumo/d","Test":"TestBroken"}
{"Action":"output","Package":"kumo.dev/kumo/d","Test":"TestBroken","Output":"    d_test.go:5: want 1, got 2\n"}
{"Action":"output","Package":"kumo.dev/kumo/d","Test":"TestBroken","Output":"--- FAIL: TestBroken (0.00s)\n"}
{"Action":"fail","Package":"kumo.dev/kumo/d","Test":"TestBroken","Elapsed":0}
{"Action":"output","Package":"kumo.dev/kumo/d","Output":"FAIL\tkumo.dev/kumo/d\t0.01s\n"}
{"Action":"fail","Package":"kumo.dev/kumo/d","Elapsed":0.01}
{"Action":"output","Package":"kumo.dev/kumo/e","Output":"panic: test timed out after 45m0s\n"}
{"Action":"output","Package":"kumo.dev/kumo/e","Output":"FAIL\tkumo.dev/kumo/e\t2700.0s\n"}
{"Action":"fail","Package":"kumo.dev/kumo/e","Elapsed":2700}
`
	res, out := run(t, input, nil)
	if res.ok() || res.failed != 1 {
		t.Errorf("ok=%v failed=%d", res.ok(), res.failed)
	}
	for _, want := range []string{
		`c/c.go:1:34: cannot use "x" as int value`,
		"--- FAIL: kumo.dev/kumo/d TestBroken\n    d_test.go:5: want 1, got 2\n",
		"panic: test timed out after 45m0s", // a package that failed after another package's test failed
		"0 passed, 1 failed, 0 skipped (0 not allowed)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

// TestRepositoryAllowListParses keeps the allow-list CI uses well-formed.
func TestRepositoryAllowListParses(t *testing.T) {
	f, err := os.Open("../skips-allowed.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := parseAllowList("hack/skips-allowed.txt", f)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.entries) == 0 {
		t.Error("no entries")
	}
}
