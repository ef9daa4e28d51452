package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json), including the build events of Go 1.24+.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string // the ImportPath whose build failed, on a package's fail
}

// skip is a skipped test and what it said when it skipped.
type skip struct {
	pkg, test string
	reason    []string
	allowed   *allowEntry
}

// result is what summarize found.
type result struct {
	passed, failed int
	skips          []skip
	pkgFailed      bool
}

// unallowed counts the skips the allow-list does not admit.
func (r result) unallowed() int {
	n := 0
	for _, s := range r.skips {
		if s.allowed == nil {
			n++
		}
	}
	return n
}

// ok reports whether CI may pass: nothing failed and every skip is allowed.
func (r result) ok() bool { return r.failed == 0 && !r.pkgFailed && r.unallowed() == 0 }

// summarize reads `go test -json` output from in and writes to w the package result lines,
// compiler errors of packages that did not build, the output of failed tests, every skipped test
// with its reason (and whether allow admits it), and a closing count line.
func summarize(in io.Reader, w io.Writer, allow *allowList) (result, error) {
	var res result
	outputs := map[string]*strings.Builder{} // "pkg test" → output
	buildOutput := map[string]*strings.Builder{}
	pkgTestsFailed := map[string]int{}
	var failedTests []string
	add := func(m map[string]*strings.Builder, k, s string) {
		if m[k] == nil {
			m[k] = &strings.Builder{}
		}
		m[k].WriteString(s)
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(w, sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			add(buildOutput, e.ImportPath, e.Output)
		case "output":
			if e.Test == "" && (strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL") || strings.HasPrefix(e.Output, "?") ||
				strings.Contains(e.Output, "[build failed]") || strings.Contains(e.Output, "[setup failed]")) {
				fmt.Fprint(w, e.Output)
			}
			add(outputs, key, e.Output)
		case "pass":
			if e.Test != "" {
				res.passed++
			}
		case "skip":
			if e.Test != "" {
				res.skips = append(res.skips, skip{pkg: e.Package, test: e.Test, reason: skipReason(outputs[key]), allowed: allow.match(e.Package, e.Test)})
			}
		case "fail":
			if e.Test != "" {
				res.failed++
				pkgTestsFailed[e.Package]++
				failedTests = append(failedTests, key)
				continue
			}
			res.pkgFailed = true
			if e.FailedBuild != "" {
				if b := buildOutput[e.FailedBuild]; b != nil {
					fmt.Fprint(w, b.String())
				}
			} else if b := outputs[key]; b != nil && pkgTestsFailed[e.Package] == 0 {
				// A package that failed without a failing test (panic, timeout, TestMain): its output says why.
				fmt.Fprint(w, b.String())
			}
		}
	}
	if err := sc.Err(); err != nil {
		return res, fmt.Errorf("read go test -json output: %w", err)
	}
	for _, k := range failedTests {
		fmt.Fprintf(w, "\n--- FAIL: %s\n%s", k, outputs[k])
	}
	if len(res.skips) > 0 {
		fmt.Fprintf(w, "\nSkipped tests:\n")
		for _, s := range res.skips {
			verdict := "NOT ALLOWED: not on the allow-list"
			if allow != nil {
				verdict += " " + allow.file
			}
			if s.allowed != nil {
				verdict = fmt.Sprintf("allowed (%s:%d: %s)", allow.file, s.allowed.line, s.allowed.reason)
			}
			fmt.Fprintf(w, "--- SKIP: %s %s — %s\n", s.pkg, s.test, verdict)
			if len(s.reason) == 0 {
				fmt.Fprintf(w, "    (skipped without a message)\n")
			}
			for _, l := range s.reason {
				fmt.Fprintf(w, "%s\n", l)
			}
		}
	}
	if allow != nil {
		for _, e := range allow.entries {
			if !e.used {
				fmt.Fprintf(w, "note: %s:%d (%s %s) matched no skipped test\n", allow.file, e.line, e.pkg, e.pattern)
			}
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped (%d not allowed)\n", res.passed, res.failed, len(res.skips), res.unallowed())
	return res, nil
}

// logHeader is the first line of a t.Log/t.Skip message in test output: "    file_test.go:12: ...".
var logHeader = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipReason picks from a skipped test's output the message it skipped with: the last logged
// message (t.Skip logs its arguments last), with its continuation lines. The framing lines of
// go test (=== RUN, --- SKIP, ...) are left out.
func skipReason(out *strings.Builder) []string {
	if out == nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		lines = append(lines, strings.TrimRight(l, "\r"))
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if logHeader.MatchString(lines[i]) {
			return lines[i:]
		}
	}
	return lines
}
