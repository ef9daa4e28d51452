// Command testsummary reads `go test -json` output and prints the package result lines, the
// compiler errors of packages that did not build, the output of failed tests, every skipped test
// with the message it skipped with, and a closing "N passed, N failed, N skipped" line. It exits
// 1 when a test or package failed or a test skipped without an entry in the allow-list
// (-skips-allowed FILE; without it, no skip is allowed).
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	allowFile := flag.String("skips-allowed", "", "allow-list of skips: lines \"PACKAGE TEST-PATTERN REASON\"")
	flag.Parse()
	var allow *allowList
	if *allowFile != "" {
		f, err := os.Open(*allowFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
			os.Exit(2)
		}
		allow, err = parseAllowList(*allowFile, f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
			os.Exit(2)
		}
	}
	res, err := summarize(os.Stdin, os.Stdout, allow)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
		os.Exit(2)
	}
	if !res.ok() {
		os.Exit(1)
	}
}
