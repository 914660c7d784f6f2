package worker

import "github.com/hearth-run/hearth/internal/snapshot"

// forget drops what s measured of function name's revisions revs (their
// init times, whether they are worth a snapshot, failed creations,
// restore times), so that functions that come and go leave nothing
// behind. A nil s (no snapshots) has nothing to drop.
func (s *snapshots) forget(name string, revs []string) {
	if s == nil || len(revs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rev := range revs {
		key := snapshot.Key(name, rev)
		delete(s.fresh, key)
		delete(s.worth, key)
		delete(s.fail, key)
		delete(s.starts, key)
		if s.svc != nil {
			s.svc.Forget(key)
		}
	}
}
