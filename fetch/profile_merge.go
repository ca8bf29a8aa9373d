package fetch

import (
	"fmt"
	"sort"
)

// MergeProfiles merges profiles recorded on several runs of one image
// (camount profile merge): the result lists every chunk any of them lists,
// each once, ordered by how early it was first read in any run (its
// smallest position, as a fraction of that run's profile; ties keep the
// order of the arguments). Profiles of different images are refused with
// ErrProfileMismatch.
func MergeProfiles(ps ...*Profile) (*Profile, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("no profiles to merge")
	}
	type rank struct {
		pos   float64
		arg   int
		chunk int
	}
	best := map[int]rank{}
	for a, p := range ps {
		if p.Identity != ps[0].Identity {
			return nil, fmt.Errorf("%w: profile %d was recorded for index %s, profile 1 for %s", ErrProfileMismatch, a+1, p.Identity, ps[0].Identity)
		}
		for k, c := range p.Chunks {
			r := rank{pos: float64(k) / float64(len(p.Chunks)), arg: a, chunk: c}
			if old, ok := best[c]; !ok || r.pos < old.pos {
				best[c] = r
			}
		}
	}
	all := make([]rank, 0, len(best))
	for _, r := range best {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].pos != all[j].pos {
			return all[i].pos < all[j].pos
		}
		if all[i].arg != all[j].arg {
			return all[i].arg < all[j].arg
		}
		return all[i].chunk < all[j].chunk
	})
	out := &Profile{Identity: ps[0].Identity, Chunks: make([]int, len(all))}
	for i, r := range all {
		out.Chunks[i] = r.chunk
	}
	return out, nil
}
