package catar

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// .caexclude handling, with casync's semantics (src/camatch.c): each
// non-empty line not starting with '#' is a pattern; a leading '!' negates
// it; a pattern without '/' applies at every depth below the directory
// holding the file, one with '/' is anchored to that directory and matched
// component by component; a trailing '/' matches directories only. Names are
// matched with fnmatch(3) and FNM_PERIOD. A name is excluded when some
// positive pattern matches it and no negative one does.

const (
	matchInner = iota
	matchPositive
	matchNegative
)

type matchNode struct {
	typ      int
	name     string
	anchored bool
	dirOnly  bool
	children []*matchNode
}

// parseExcludeFile reads a .caexclude file into a list of rules.
func parseExcludeFile(path string) ([]*matchNode, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*matchNode
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		m, err := parseMatchLine(l)
		if err != nil {
			return nil, fmt.Errorf("%s: pattern %q: %w", path, l, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMatchLine(p string) (*matchNode, error) {
	typ := matchPositive
	if strings.HasPrefix(p, "!") {
		typ = matchNegative
		p = p[1:]
	}
	anchored := strings.Contains(p, "/")
	p = strings.TrimLeft(p, "/")
	var first, cur *matchNode
	for {
		k := strings.IndexByte(p, '/')
		if k < 0 {
			k = len(p)
		}
		name := p[:k]
		if name == "" || name == "." || name == ".." {
			return nil, fmt.Errorf("empty, '.' or '..' path component")
		}
		p = p[k:]
		dirOnly := strings.HasPrefix(p, "/")
		p = strings.TrimLeft(p, "/")
		t := matchInner
		if p == "" {
			t = typ
		}
		item := &matchNode{typ: t, name: name, anchored: anchored, dirOnly: dirOnly}
		if first == nil {
			first = item
		} else {
			cur.children = append(cur.children, item)
		}
		if p == "" {
			break
		}
		cur = item
		anchored = true
	}
	return first, nil
}

// matchTest tests name against rules; it returns whether to exclude it and
// the rules that apply inside it when it is a directory.
func matchTest(rules []*matchNode, name string, isDir bool) (bool, []*matchNode) {
	var sub []*matchNode
	pos, neg := false, false
	for _, c := range rules {
		if !c.anchored && isDir {
			sub = append(sub, c)
		}
		if c.dirOnly && !isDir {
			continue
		}
		if !fnmatch(c.name, name) {
			continue
		}
		switch c.typ {
		case matchNegative:
			neg = true
		case matchPositive:
			pos = true
		case matchInner:
			sub = append(sub, c.children...)
		}
	}
	return pos && !neg, sub
}

// fnmatch implements fnmatch(3) with FNM_PERIOD (and without FNM_PATHNAME)
// on bytes.
func fnmatch(pat, s string) bool {
	if strings.HasPrefix(s, ".") && !strings.HasPrefix(pat, ".") && !strings.HasPrefix(pat, "\\.") {
		// A leading period must be matched by a literal period.
		return false
	}
	return fnm(pat, s)
}

func fnm(pat, s string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for len(pat) > 0 && pat[0] == '*' {
				pat = pat[1:]
			}
			if pat == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if fnm(pat, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			pat, s = pat[1:], s[1:]
		case '[':
			if s == "" {
				return false
			}
			ok, rest, valid := matchBracket(pat, s[0])
			if !valid {
				// An unterminated bracket matches a literal '['.
				if s[0] != '[' {
					return false
				}
				pat, s = pat[1:], s[1:]
				continue
			}
			if !ok {
				return false
			}
			pat, s = rest, s[1:]
		case '\\':
			if len(pat) > 1 {
				pat = pat[1:]
			}
			fallthrough
		default:
			if s == "" || s[0] != pat[0] {
				return false
			}
			pat, s = pat[1:], s[1:]
		}
	}
	return s == ""
}

var charClasses = map[string]func(byte) bool{
	"alpha": func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' },
	"digit": func(c byte) bool { return c >= '0' && c <= '9' },
	"alnum": func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' },
	"upper": func(c byte) bool { return c >= 'A' && c <= 'Z' },
	"lower": func(c byte) bool { return c >= 'a' && c <= 'z' },
	"space": func(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' },
	"blank": func(c byte) bool { return c == ' ' || c == '\t' },
	"punct": func(c byte) bool {
		return c > ' ' && c < 127 && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
	},
	"xdigit": func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' },
	"cntrl":  func(c byte) bool { return c < ' ' || c == 127 },
	"print":  func(c byte) bool { return c >= ' ' && c < 127 },
	"graph":  func(c byte) bool { return c > ' ' && c < 127 },
}

// matchBracket matches c against the bracket expression at the start of pat.
func matchBracket(pat string, c byte) (matched bool, rest string, valid bool) {
	i := 1
	neg := false
	if i < len(pat) && (pat[i] == '!' || pat[i] == '^') {
		neg = true
		i++
	}
	first := true
	for i < len(pat) {
		if pat[i] == ']' && !first {
			return matched != neg, pat[i+1:], true
		}
		first = false
		if pat[i] == '[' && i+1 < len(pat) && pat[i+1] == ':' {
			if end := strings.Index(pat[i+2:], ":]"); end >= 0 {
				if f, ok := charClasses[pat[i+2:i+2+end]]; ok {
					if f(c) {
						matched = true
					}
					i += 2 + end + 2
					continue
				}
			}
		}
		lo := pat[i]
		if lo == '\\' && i+1 < len(pat) {
			i++
			lo = pat[i]
		}
		i++
		hi := lo
		if i+1 < len(pat) && pat[i] == '-' && pat[i+1] != ']' {
			hi = pat[i+1]
			i += 2
			if hi == '\\' && i < len(pat) {
				hi = pat[i]
				i++
			}
		}
		if c >= lo && c <= hi {
			matched = true
		}
	}
	return false, "", false
}
