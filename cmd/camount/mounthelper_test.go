package main

import (
	"slices"
	"testing"
)

func TestMountHelperArgs(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want []string
		fake bool
	}{
		{[]string{"/srv/os.caidx", "/mnt/os", "-o", "ro,_netdev,store=http://h/os.castr|http://m/os.castr,cache=/var/cache/camount,allow_other,x-systemd.automount"},
			[]string{"mount", "--daemon", "--mkdir=no", "--store=http://h/os.castr|http://m/os.castr", "--cache=/var/cache/camount", "--allow-other", "/srv/os.caidx", "/mnt/os"}, false},
		{[]string{"-fv", "-o", "rw,prefetch_profile=/p", "-t", "camount", "i.caibx", "d"},
			[]string{"mount", "--daemon", "--mkdir=no", "--verbose", "--prefetch-profile=/p", "i.caibx", "d"}, true},
		{[]string{"i.caidx", "d", "-n", "-s"}, []string{"mount", "--daemon", "--mkdir=no", "i.caidx", "d"}, false},
	} {
		got, fake, err := mountHelperArgs(c.argv)
		if err != nil || !slices.Equal(got, c.want) || fake != c.fake {
			t.Errorf("mountHelperArgs(%q) = %q, fake %v, %v; want %q, fake %v", c.argv, got, fake, err, c.want, c.fake)
		}
	}
	for _, bad := range [][]string{{"only-one"}, {"a", "b", "c"}, {"a", "b", "-o"}, {"a", "b", "-t", "ext4"}, {"a", "b", "-N", "/proc/1/ns/mnt"}, {"a", "b", "--bogus"}} {
		if _, _, err := mountHelperArgs(bad); err == nil {
			t.Errorf("mountHelperArgs(%q) succeeded", bad)
		}
	}
}
