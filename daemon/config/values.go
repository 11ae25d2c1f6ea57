package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
)

// ByteSize is a size in bytes. In YAML it is an integer or a string with a
// unit: "512MiB", "10GiB", "2GB", "1.5TiB".
type ByteSize int64

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

var byteSizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$`)

// ParseByteSize parses "10GiB", "500MB" or "1024".
func ParseByteSize(s string) (ByteSize, error) {
	m := byteSizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. 10GiB, 500MB, 1024)", s)
	}
	mult, ok := byteUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, m[2])
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	return ByteSize(f * mult), nil
}

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%dB", int64(b))
	}
}

// byteSizeHook decodes strings into ByteSize.
var byteSizeHook mapstructure.DecodeHookFuncType = func(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(ByteSize(0)) || from.Kind() != reflect.String {
		return data, nil
	}
	if strings.TrimSpace(data.(string)) == "" {
		return ByteSize(0), nil // an empty size is none: no cap, no minimum
	}
	return ParseByteSize(data.(string))
}

// TemplateVars lists the placeholders allowed in target.repo_template and
// target.branch.
var TemplateVars = []string{"adapter", "adapter_owner", "base_name", "base_owner", "track"}

var placeholderRE = regexp.MustCompile(`\{([^{}]*)\}`)

func checkTemplate(tmpl string) error {
	for _, m := range placeholderRE.FindAllStringSubmatch(tmpl, -1) {
		known := false
		for _, v := range TemplateVars {
			known = known || m[1] == v
		}
		if !known {
			return fmt.Errorf("unknown placeholder {%s} in %q (known: {%s})", m[1], tmpl, strings.Join(TemplateVars, "}, {"))
		}
	}
	if strings.ContainsAny(placeholderRE.ReplaceAllString(tmpl, "x"), "{} \t") {
		return fmt.Errorf("stray brace or space in %q", tmpl)
	}
	return nil
}

// Expand substitutes placeholders in a validated template. A missing value
// is an error naming the placeholder.
func Expand(tmpl string, vars map[string]string) (string, error) {
	var missing string
	out := placeholderRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		k := m[1 : len(m)-1]
		v, ok := vars[k]
		if !ok || v == "" {
			missing = k
		}
		return v
	})
	if missing != "" {
		return "", fmt.Errorf("template %q: no value for {%s}", tmpl, missing)
	}
	return out, nil
}

// TokenSource says where ResolveToken found the token. It never holds the
// token itself, so it is safe to log.
type TokenSource string

// ResolveToken finds the Hub token: hub.token_file, then the systemd
// credential $CREDENTIALS_DIRECTORY/hf_token, then HF_TOKEN. No token is
// not an error (public repos work anonymously): it returns "" and source
// "none". getenv is os.Getenv outside tests.
func (c *Config) ResolveToken(getenv func(string) string) (string, TokenSource, error) {
	if c.Hub.TokenFile != "" {
		tok, err := readTokenFile(c.Hub.TokenFile)
		if err != nil {
			return "", "", fmt.Errorf("hub.token_file: %w", err)
		}
		return tok, TokenSource("file " + c.Hub.TokenFile), nil
	}
	if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, "hf_token")
		if _, err := os.Stat(p); err == nil {
			tok, err := readTokenFile(p)
			if err != nil {
				return "", "", fmt.Errorf("systemd credential hf_token: %w", err)
			}
			return tok, "systemd credential hf_token", nil
		}
	}
	if tok := strings.TrimSpace(getenv("HF_TOKEN")); tok != "" {
		return tok, "environment HF_TOKEN", nil
	}
	return "", "none", nil
}

func readTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}
