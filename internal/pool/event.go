package pool

import (
	"bufio"
	"io"
	"strconv"
	"time"
)

// Op is what happened to a container in an Event.
type Op uint8

// Ops of Events.
const (
	OpHit     Op = iota + 1 // Acquire handed out an idle container
	OpAdmit                 // Admit started one
	OpWarm                  // Warm pre-started one
	OpRelease               // Release made one idle
	OpResize                // Resize changed its charge (Event.Size is the new one)
	OpEvict                 // made room for another
	OpExpire                // its keep-alive ran out
	OpRemove                // Remove took it away
)

var opNames = [...]string{OpHit: "hit", OpAdmit: "admit", OpWarm: "warm", OpRelease: "release",
	OpResize: "resize", OpEvict: "evict", OpExpire: "expire", OpRemove: "remove"}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "op?"
}

// Event is one change to a container, for Config.Observe: a live pool's
// and a simulated one's can be laid side by side to find where they part.
type Event struct {
	At   time.Duration // the now of the call that caused it (Resize, Remove: the last one given)
	Op   Op
	Fn   Fn
	ID   ID
	Size int64 // the container's charge after the event (before it, for evict, expire and remove)
	Used int64 // the pool's charged memory after the event, all partitions
}

// emit reports a change to container slot to the observer, if any. Called
// after the change, except for evictions, expiries and removals, which
// report the container as it was (drop clears it) and Used as it will be.
func (e *Engine) emit(op Op, slot int32, used int64) {
	c := &e.cs[slot]
	e.observe(Event{At: e.clock, Op: op, Fn: c.fn, ID: e.id(slot), Size: c.size, Used: used})
}

// EventHeader is the first line EventWriter writes.
const EventHeader = "t_ms,op,function,revision,id,size_bytes,used_bytes\n"

// EventWriter writes Events as CSV lines under EventHeader, naming each
// event's function, for a live worker's log and a simulation's alike.
type EventWriter struct {
	w   *bufio.Writer
	buf []byte
	err error // the first write error; later events are dropped
}

// NewEventWriter writes the header to w and returns a writer of events.
func NewEventWriter(w io.Writer) *EventWriter {
	ew := &EventWriter{w: bufio.NewWriterSize(w, 64<<10)}
	_, ew.err = ew.w.WriteString(EventHeader)
	return ew
}

// Write appends ev of function name's revision rev, which hold no commas
// or newlines.
func (ew *EventWriter) Write(ev Event, name, rev string) {
	if ew.err != nil {
		return
	}
	b := ew.buf[:0]
	b = strconv.AppendFloat(b, float64(ev.At.Microseconds())/1000, 'f', 3, 64)
	b = append(b, ',')
	b = append(b, ev.Op.String()...)
	b = append(b, ',')
	b = append(b, name...)
	b = append(b, ',')
	b = append(b, rev...)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(ev.ID), 16)
	b = append(b, ',')
	b = strconv.AppendInt(b, ev.Size, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, ev.Used, 10)
	b = append(b, '\n')
	ew.buf = b
	_, ew.err = ew.w.Write(b)
}

// Flush writes what is buffered and returns the first error of any write.
func (ew *EventWriter) Flush() error {
	if ew.err != nil {
		return ew.err
	}
	ew.err = ew.w.Flush()
	return ew.err
}
