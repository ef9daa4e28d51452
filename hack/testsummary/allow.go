package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// allowEntry admits the skips of the tests of one package whose names match a pattern, for a
// stated reason.
type allowEntry struct {
	pkg     string
	test    *regexp.Regexp // matches the whole test name (subtests as Parent/sub)
	pattern string
	reason  string
	line    int
	used    bool
}

// allowList is the parsed allow-list file.
type allowList struct {
	file    string
	entries []*allowEntry
}

// parseAllowList reads an allow-list: one entry per line, "PACKAGE TEST-PATTERN REASON...",
// separated by blanks; TEST-PATTERN is a Go regular expression that must match the whole test
// name; REASON (the rest of the line) is required. Blank lines and lines starting with # are
// ignored.
func parseAllowList(name string, r io.Reader) (*allowList, error) {
	l := &allowList{file: name}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: want \"PACKAGE TEST-PATTERN REASON\", got %q", name, n, line)
		}
		re, err := regexp.Compile("^(?:" + fields[1] + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: test pattern %q: %w", name, n, fields[1], err)
		}
		reason := strings.Join(fields[2:], " ")
		l.entries = append(l.entries, &allowEntry{pkg: fields[0], test: re, pattern: fields[1], reason: reason, line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return l, nil
}

// match returns the entry that admits a skipped test, or nil.
func (l *allowList) match(pkg, test string) *allowEntry {
	if l == nil {
		return nil
	}
	for _, e := range l.entries {
		if e.pkg == pkg && e.test.MatchString(test) {
			e.used = true
			return e
		}
	}
	return nil
}
