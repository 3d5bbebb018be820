// Command runc-wrapper sits in front of runc and drops every capability that the
// host cannot grant, then execs the real runc with the same arguments.
//
// Some sandboxes (this project's CI machines among them) run without a few
// capabilities in their bounding set (CAP_SYS_RESOURCE, for instance). runc then
// refuses privileged containers ("unable to apply caps"), which kind's node
// containers and privileged pods such as kube-proxy are. The wrapper removes from
//
//   - the OCI bundle's config.json (process.capabilities), for `create` and `run`;
//   - the --process file (top-level capabilities), for `exec`;
//
// each capability that is not in CapBnd of /proc/self/status, and leaves everything
// else byte-for-byte alone when nothing has to change. dockerd uses it as a runtime
// (`dockerd --add-runtime wrapped=<this binary> --default-runtime wrapped`) and the
// kind node image installs it as /usr/local/sbin/runc in front of Debian's
// /usr/sbin/runc. Standard library only, built static (CGO_ENABLED=0).
//
// The real runc is $RUNC_WRAPPER_REAL if set, else the first of /usr/sbin/runc,
// /usr/bin/runc, /sbin/runc, /bin/runc, /usr/local/bin/runc that is not this binary.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames maps capability names to their numbers (linux/capability.h).
var capNames = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// capSets are the capability lists of an OCI process.
var capSets = []string{"bounding", "effective", "inheritable", "permitted", "ambient"}

// globalFlagsWithValue are runc's global flags that take a separate value.
var globalFlagsWithValue = map[string]bool{
	"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true,
}

func main() {
	args := os.Args[1:]
	if err := fixCaps(args); err != nil {
		// Never block the container runtime on our own trouble: say it and go on.
		fmt.Fprintf(os.Stderr, "runc-wrapper: %v (running runc unchanged)\n", err)
	}
	real, err := realRunc()
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-wrapper: %v\n", err)
		os.Exit(127)
	}
	err = syscall.Exec(real, append([]string{"runc"}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "runc-wrapper: exec %s: %v\n", real, err)
	os.Exit(127)
}

// fixCaps finds the file that holds the capabilities for this runc call, if any,
// and rewrites it without the capabilities the host lacks.
func fixCaps(args []string) error {
	cmd, rest := subcommand(args)
	var file string
	var nested bool
	switch cmd {
	case "create", "run":
		bundle := flagValue(rest, "-b", "--bundle")
		if bundle == "" {
			bundle = "."
		}
		file, nested = filepath.Join(bundle, "config.json"), true
	case "exec":
		file = flagValue(rest, "-p", "--process")
		if file == "" {
			return nil // capabilities come from flags (--cap), which we leave alone
		}
	default:
		return nil
	}
	bnd, err := boundingSet("/proc/self/status")
	if err != nil {
		return err
	}
	return rewriteFile(file, nested, bnd)
}

// subcommand returns runc's subcommand and the arguments after it.
func subcommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if globalFlagsWithValue[a] {
			i++
		}
	}
	return "", nil
}

// flagValue returns the value of a flag given as "-f v", "--flag v" or "--flag=v".
func flagValue(args []string, short, long string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if (a == short || a == long) && i+1 < len(args) {
			return args[i+1]
		}
		for _, name := range []string{short, long} {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
	}
	return ""
}

// boundingSet reads the CapBnd mask from a /proc/<pid>/status file.
func boundingSet(status string) (uint64, error) {
	f, err := os.Open(status)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no CapBnd in %s", status)
}

// rewriteFile filters the capabilities in an OCI config.json (nested: under
// "process") or a runc --process file (top level), writing it back only if
// something was dropped.
func rewriteFile(path string, nested bool, bnd uint64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, changed, err := filterJSON(data, nested, bnd)
	if err != nil || !changed {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".runc-wrapper.tmp"
	if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// filterJSON returns doc with every capability outside bnd removed. Only the
// capability lists are re-encoded; every other field is kept as it was.
func filterJSON(doc []byte, nested bool, bnd uint64) ([]byte, bool, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, false, err
	}
	proc := top
	if nested {
		raw, ok := top["process"]
		if !ok || string(raw) == "null" {
			return doc, false, nil
		}
		if err := json.Unmarshal(raw, &proc); err != nil {
			return nil, false, err
		}
	}
	rawCaps, ok := proc["capabilities"]
	if !ok || string(rawCaps) == "null" {
		return doc, false, nil
	}
	var caps map[string]json.RawMessage
	if err := json.Unmarshal(rawCaps, &caps); err != nil {
		return nil, false, err
	}
	changed := false
	for _, set := range capSets {
		raw, ok := caps[set]
		if !ok || string(raw) == "null" {
			continue
		}
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, false, err
		}
		kept := filterCaps(list, bnd)
		if len(kept) == len(list) {
			continue
		}
		b, err := json.Marshal(kept)
		if err != nil {
			return nil, false, err
		}
		caps[set], changed = b, true
	}
	if !changed {
		return doc, false, nil
	}
	var err error
	if proc["capabilities"], err = json.Marshal(caps); err != nil {
		return nil, false, err
	}
	if nested {
		if top["process"], err = json.Marshal(proc); err != nil {
			return nil, false, err
		}
	}
	out, err := json.Marshal(top)
	return out, true, err
}

// filterCaps keeps the capabilities whose bit is set in bnd. Names it does not
// know are dropped too: the host cannot be asked for what nobody can name.
func filterCaps(list []string, bnd uint64) []string {
	kept := make([]string, 0, len(list))
	for _, c := range list {
		if n, ok := capNames[strings.ToUpper(c)]; ok && bnd&(1<<n) != 0 {
			kept = append(kept, c)
		}
	}
	return kept
}

// realRunc finds the runc binary to hand over to, never this wrapper itself.
func realRunc() (string, error) {
	if p := os.Getenv("RUNC_WRAPPER_REAL"); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	selfInfo, _ := os.Stat(self)
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc", "/bin/runc", "/usr/local/bin/runc"} {
		info, err := os.Stat(p)
		if err != nil || info.IsDir() {
			continue
		}
		if selfInfo != nil && os.SameFile(info, selfInfo) {
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("no real runc found (set RUNC_WRAPPER_REAL)")
}
