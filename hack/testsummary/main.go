// Command testsummary reads `go test -json` output and prints the package result lines, the
// output of failed tests, and a closing "N passed, N failed, N skipped" line. It exits 1 when a
// test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	outputs := map[string]*strings.Builder{}
	var passed, failed, skipped int
	var failedTests []string
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				if strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL") || strings.HasPrefix(e.Output, "?") || strings.Contains(e.Output, "[build failed]") || strings.Contains(e.Output, "[setup failed]") {
					fmt.Print(e.Output)
				}
				if outputs[key] == nil {
					outputs[key] = &strings.Builder{}
				}
				outputs[key].WriteString(e.Output)
				continue
			}
			if outputs[key] == nil {
				outputs[key] = &strings.Builder{}
			}
			outputs[key].WriteString(e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
		case "skip":
			if e.Test != "" {
				skipped++
			}
		case "fail":
			if e.Test != "" {
				failed++
				failedTests = append(failedTests, key)
			} else {
				pkgFailed = true
				if b := outputs[key]; b != nil && failed == 0 {
					fmt.Print(b.String())
				}
			}
		}
	}
	for _, k := range failedTests {
		fmt.Printf("\n--- FAIL: %s\n%s", k, outputs[k])
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed {
		os.Exit(1)
	}
}
