package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// camount as mount.camount: mount(8) runs /sbin/mount.camount for
// `mount -t camount` and fstab lines of type camount, as
//
//	mount.camount INDEX DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]
//
// The options become flags of `camount mount --daemon --mkdir=no`
// (store=URL → --store=URL, allow_other → --allow-other, cache=DIR,
// prefetch-profile=FILE, log-file=FILE ...), so it returns once the tree is
// mounted, and umount(8) unmounts it. mount(8)'s own options (ro, rw,
// _netdev, noauto, nofail, x-systemd.*, ...) are not passed on: the mount is
// read-only whatever they say. See docs/BOOT.md.

// mountHelperName is the program name mount(8) looks for.
const mountHelperName = "mount.camount"

// isMountHelper reports whether this process was started as mount.camount
// (and is not the background child of its --daemon mount).
func isMountHelper(argv0 string) bool {
	return filepath.Base(argv0) == mountHelperName && !isDaemonChild()
}

// mountGenericOptions are mount(8)'s options that camount ignores.
var mountGenericOptions = map[string]bool{
	"ro": true, "rw": true, "defaults": true, "auto": true, "noauto": true, "_netdev": true,
	"nofail": true, "user": true, "users": true, "nouser": true, "owner": true, "group": true,
	"exec": true, "noexec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"diratime": true, "nodiratime": true, "sync": true, "async": true, "silent": true, "loud": true,
	"lazytime": true, "nolazytime": true, "bg": true, "fg": true,
}

// mountHelperArgs turns mount.camount's arguments into those of `camount
// mount`. fake is -f (do everything but mount).
func mountHelperArgs(argv []string) (args []string, fake bool, err error) {
	var pos, opts []string
	verbose := false
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 >= len(argv) {
				return nil, false, usagef("%s needs a value", a)
			}
			i++
			switch a {
			case "-o":
				opts = append(opts, strings.Split(argv[i], ",")...)
			case "-t":
				if t := argv[i]; t != "camount" && !strings.HasPrefix(t, "fuse.camount") && t != "fuse" {
					return nil, false, usagef("-t %s: this helper mounts type camount", t)
				}
			case "-N":
				return nil, false, usagef("-N %s: mount namespaces are not supported", argv[i])
			}
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, strings.Split(a[2:], ",")...)
		case strings.HasPrefix(a, "-") && len(a) > 1 && strings.Trim(a[1:], "sfnvr") == "":
			fake = fake || strings.Contains(a, "f")
			verbose = verbose || strings.Contains(a, "v")
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, false, usagef("unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, usagef("want INDEX and DIR, got %d arguments", len(pos))
	}
	args = []string{"mount", "--daemon", "--mkdir=no"}
	if verbose {
		args = append(args, "--verbose")
	}
	for _, o := range opts {
		if o == "" || mountGenericOptions[o] || strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment=") {
			continue
		}
		k, v, hasV := strings.Cut(o, "=")
		flag := "--" + strings.ReplaceAll(k, "_", "-")
		if hasV {
			flag += "=" + v
		}
		args = append(args, flag)
	}
	return append(args, pos...), fake, nil
}

// mountHelperMain runs mount.camount; it returns the exit status.
func mountHelperMain(argv []string, stdout, stderr io.Writer) int {
	args, fake, err := mountHelperArgs(argv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nusage: %s INDEX DIR [-sfnv] [-o store=URL,cache=DIR,allow_other,...]\n", mountHelperName, err, mountHelperName)
		return 1
	}
	if fake {
		return 0
	}
	// daemonize starts this binary again with os.Args[1:]: the camount
	// arguments, not mount(8)'s.
	os.Args = append([]string{os.Args[0]}, args...)
	return run(args, stdout, stderr)
}
