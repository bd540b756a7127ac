package parquet

import "errors"

// A run of ordered rows is written to its file on a goroutine of its own
// (a flight), while the writer goroutine goes on holding the next rows in
// a fresh cluster. Encoding a run (the Parquet columns, the zstd
// compression) is most of the writer's work and comes in bursts of
// sort_rows rows; without a flight the writer would spend each burst
// unable to take jobs, Write would wait for it once the jobs run out, and
// the two would take turns on the cores instead of sharing them.
//
// One flight at most is in the air, for the whole sink: the files share
// one zstd encoder, and a file takes one writer at a time. Whatever else
// touches a Parquet writer (a run written at once, a file completed or
// removed, Close) first lands the flight (settle), under pm.

// flight is a run being written to its file.
type flight struct {
	p    *part
	c    *cluster // the run; back to the spare clusters once landed
	done chan struct{}
	err  error
}

// errGone is the error of a write to a file that a failed flight
// abandoned meanwhile.
var errGone = errors.New("the file was abandoned after a failed write")

// put appends rows to p: at once when now is set or rows are not
// ordered, else into p's cluster (which holds j, or copies the rows
// without a j), whose run takes off once complete.
func (s *Sink) put(p *part, j *job, rows []Row, now bool) error {
	if p.c == nil {
		if s.settle(); p.gone {
			return errGone
		}
		return p.encode(rows)
	}
	p.c.add(rows, j)
	if now {
		if s.settle(); p.gone {
			return errGone
		}
		return p.c.flush(p.encode)
	}
	q := p
	if !p.c.full() {
		if q = s.overHeld(); q == nil {
			return nil
		}
	}
	if s.settle(); p.gone {
		return errGone
	}
	if !q.gone {
		s.launch(q)
	}
	return nil
}

// overHeld returns the file with the longest run when the open files hold
// more than two runs' rows together (so their memory stays bounded however
// many files are open: with many, runs are shorter), else nil.
func (s *Sink) overHeld() *part {
	held := 0
	var most *part
	for _, p := range s.parts {
		if p.c == nil {
			continue
		}
		held += len(p.c.rows)
		if most == nil || len(p.c.rows) > len(most.c.rows) {
			most = p
		}
	}
	if held <= 2*s.clusters.max {
		return nil
	}
	return most
}

// launch orders p's complete run and writes it on a flight, and gives p
// a fresh cluster. The caller settled the previous flight. The run is
// ordered here, on the writer goroutine, which has time to spare (it
// copies nothing), while the flight is the sink's longest path.
func (s *Sink) launch(p *part) {
	f := &flight{p: p, c: p.c, done: make(chan struct{})}
	f.c.sort()
	p.c = s.clusters.get()
	s.flying = f
	go func() {
		defer close(f.done)
		f.err = f.c.flush(p.encode)
	}()
}

// settle waits for the flight in the air, if any, and lands it: a file
// whose run failed is abandoned, its rows lost.
func (s *Sink) settle() {
	if f := s.flying; f != nil {
		<-f.done
		s.land(f)
	}
}

// poll lands the flight if it is done, without waiting.
func (s *Sink) poll() {
	if f := s.flying; f != nil {
		select {
		case <-f.done:
			s.land(f)
		default:
		}
	}
}

func (s *Sink) land(f *flight) {
	s.flying = nil
	s.clusters.put(f.c)
	if f.err != nil && !f.p.gone {
		s.logErr(f.p.dir, f.err)
		s.abandon(f.p, f.err)
	}
}

// inFlight reports whether p's run is being written.
func (s *Sink) inFlight(p *part) bool { return s.flying != nil && s.flying.p == p }
