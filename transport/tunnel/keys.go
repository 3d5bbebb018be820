package tunnel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
)

// key is one token a gateway accepts.
type key struct {
	token    []byte
	digest   [sha256.Size]byte // names the token in sessions without keeping it twice
	perAgent bool              // from the per-agent tokens: bound to one identity
}

func newKey(tok string, perAgent bool) key {
	return key{token: []byte(tok), digest: sha256.Sum256([]byte(tok)), perAgent: perAgent}
}

// keyring is the tokens a gateway accepts: shared ones for any identity,
// and per-agent ones, which replace the shared ones for their identity.
type keyring struct {
	shared []key
	agents map[string][]key
}

// candidates returns the keys an agent named id may prove.
func (k *keyring) candidates(id string) []key {
	if list, ok := k.agents[id]; ok {
		return list
	}
	return k.shared
}

// valid reports whether a session of id authenticated with the key digest
// d may go on under this keyring.
func (k *keyring) valid(id string, d [sha256.Size]byte) bool {
	return slices.ContainsFunc(k.candidates(id), func(c key) bool { return c.digest == d })
}

// loadKeyring builds the keyring from the configured token, token file and
// per-agent tokens file.
func loadKeyring(token, tokenFile, agentsFile string) (*keyring, error) {
	k := &keyring{agents: map[string][]key{}}
	var shared []string
	if token != "" {
		if err := CheckToken(token); err != nil {
			return nil, err
		}
		shared = append(shared, token)
	}
	if tokenFile != "" {
		lines, err := parseFile(tokenFile, func(line string) error {
			shared = append(shared, line)
			return CheckToken(line)
		})
		if err != nil {
			return nil, err
		}
		if lines == 0 {
			return nil, fmt.Errorf("%s: no token in the file", tokenFile)
		}
	}
	if len(shared) > maxKeys {
		return nil, fmt.Errorf("tunnel: %d shared tokens; at most %d (two during a rotation)", len(shared), maxKeys)
	}
	for _, tok := range shared {
		k.shared = append(k.shared, newKey(tok, false))
	}
	if agentsFile != "" {
		_, err := parseFile(agentsFile, func(line string) error {
			id, tok, ok := strings.Cut(line, " ")
			tok = strings.TrimSpace(tok)
			if !ok || tok == "" {
				return fmt.Errorf("want \"identity token\"")
			}
			if !ValidIdentity(id) {
				return fmt.Errorf("invalid identity %q", id)
			}
			if err := CheckToken(tok); err != nil {
				return err
			}
			if len(k.agents[id]) == maxKeys {
				return fmt.Errorf("more than %d tokens for %q", maxKeys, id)
			}
			k.agents[id] = append(k.agents[id], newKey(tok, true))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(k.shared) == 0 && len(k.agents) == 0 {
		return nil, fmt.Errorf("tunnel gateway: a token (Token, TokenFile or AgentTokensFile) is required")
	}
	return k, nil
}

// CheckTokens returns an error unless a gateway could start with these
// tokens: token, every token of tokenFile (one per line; # comments) and
// every "identity token" line of agentTokensFile, as GatewayConfig takes
// them. An agent proves the first token of tokenFile.
func CheckTokens(token, tokenFile, agentTokensFile string) error {
	_, err := loadKeyring(token, tokenFile, agentTokensFile)
	return err
}

// parseFile calls line for every line of file that is neither empty nor
// a comment (#), trimmed, and returns how many there were.
func parseFile(file string, line func(string) error) (int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	n, count := 0, 0
	for s.Scan() {
		n++
		l := strings.TrimSpace(s.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		count++
		if err := line(l); err != nil {
			return 0, fmt.Errorf("%s line %d: %w", file, n, err)
		}
	}
	return count, s.Err()
}

// readToken returns the first token of a token file.
func readToken(file string) (string, error) {
	var tok string
	_, err := parseFile(file, func(l string) error {
		if tok == "" {
			tok = l
		}
		return nil
	})
	if err == nil && tok == "" {
		err = fmt.Errorf("%s: no token in the file", file)
	}
	if err == nil {
		err = CheckToken(tok)
	}
	return tok, err
}

// certAllows reports whether a client certificate allows identity id: its DNS names
// (a wildcard "*.domain" allows any one label in front of domain), or its
// common name if it has no DNS name.
func certAllows(cert *x509.Certificate, id string) bool {
	id = strings.ToLower(id)
	if len(cert.DNSNames) == 0 {
		return cert.Subject.CommonName != "" && strings.EqualFold(cert.Subject.CommonName, id)
	}
	for _, name := range cert.DNSNames {
		name = strings.ToLower(name)
		if domain, ok := strings.CutPrefix(name, "*."); ok {
			if i := strings.IndexByte(id, '.'); i > 0 && id[i+1:] == domain {
				return true
			}
		} else if name == id {
			return true
		}
	}
	return false
}
