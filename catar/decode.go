package catar

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Decoder reads a catar stream sequentially, validating it strictly: record
// grammar and limits, name order, goodbye tables (they must be exactly what
// casync writes) and no trailing bytes. Use it like archive/tar: Next
// returns each entry in archive order (the root first, Path ""), and Read
// reads the current regular file's contents.
type Decoder struct {
	r        *bufio.Reader
	off      int64
	features uint64
	stack    []*decDir
	started  bool
	done     bool
	err      error
	left     int64 // payload bytes of the current entry not yet read
	buf      []byte
}

type decDir struct {
	e     *Entry
	items []goodbyeItem
	last  string
	start int64 // FILENAME offset of this directory (for the parent's item)
}

// NewDecoder returns a Decoder reading the archive from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 256<<10)}
}

// Features returns the archive's feature flags (known after the first Next).
func (d *Decoder) Features() uint64 { return d.features }

// Offset returns the number of archive bytes consumed so far.
func (d *Decoder) Offset() int64 { return d.off }

func (d *Decoder) readFull(n int) ([]byte, error) {
	if cap(d.buf) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	m, err := io.ReadFull(d.r, b)
	d.off += int64(m)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, formatErr(d.off, "archive truncated")
		}
		return nil, err
	}
	return b, nil
}

// peekHeader returns the next record's size and type without consuming it.
func (d *Decoder) peekHeader() (size, typ uint64, err error) {
	h, err := d.r.Peek(headerSize)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, 0, formatErr(d.off, "archive truncated")
		}
		return 0, 0, err
	}
	size, typ = le.Uint64(h), le.Uint64(h[8:])
	max := maxRecordSize(typ)
	switch {
	case max == 0:
		return 0, 0, formatErr(d.off, "unknown record type 0x%016x", typ)
	case size < headerSize || size == ^uint64(0):
		return 0, 0, formatErr(d.off, "%s record size %d invalid", recordName(typ), size)
	case size > max:
		return 0, 0, formatErr(d.off, "%s record of %d bytes is too large", recordName(typ), size)
	}
	return size, typ, nil
}

// record consumes a whole record (header and body) and returns the body.
func (d *Decoder) record(size uint64) ([]byte, error) {
	b, err := d.readFull(int(size))
	if err != nil {
		return nil, err
	}
	return b[headerSize:], nil
}

func (d *Decoder) skip(n int64) error {
	for n > 0 {
		k := int(min(n, 1<<30))
		m, err := d.r.Discard(k)
		d.off += int64(m)
		n -= int64(m)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return formatErr(d.off, "archive truncated inside a payload")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Read reads the contents of the current regular file.
func (d *Decoder) Read(p []byte) (int, error) {
	if d.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.off += int64(n)
	d.left -= int64(n)
	if err == io.EOF && d.left > 0 {
		err = formatErr(d.off, "archive truncated inside a payload")
	}
	return n, err
}

// WriteTo copies the rest of the current file's contents to w.
func (d *Decoder) WriteTo(w io.Writer) (int64, error) {
	n, err := io.CopyN(w, d.r, d.left)
	d.off += n
	d.left -= n
	if err == io.EOF {
		err = formatErr(d.off, "archive truncated inside a payload")
	}
	return n, err
}

// Next advances to the next entry. It returns io.EOF after the root's
// goodbye record, once it has checked that nothing follows.
func (d *Decoder) Next() (*Entry, error) {
	if d.err != nil {
		return nil, d.err
	}
	e, err := d.next()
	if err != nil {
		d.err = err
	}
	return e, err
}

func (d *Decoder) next() (*Entry, error) {
	if d.left > 0 {
		if err := d.skip(d.left); err != nil {
			return nil, err
		}
		d.left = 0
	}
	if !d.started {
		d.started = true
		e, err := d.node(-1, "", "")
		if err != nil {
			return nil, err
		}
		if !e.IsDir() {
			return nil, formatErr(0, "the root entry is not a directory")
		}
		return e, nil
	}
	for {
		if len(d.stack) == 0 {
			if _, err := d.r.ReadByte(); err != io.EOF {
				if err == nil {
					return nil, formatErr(d.off, "trailing data after the archive")
				}
				return nil, err
			}
			return nil, io.EOF
		}
		top := d.stack[len(d.stack)-1]
		size, typ, err := d.peekHeader()
		if err != nil {
			return nil, err
		}
		switch typ {
		case TypeFilename:
			start := d.off
			body, err := d.record(size)
			if err != nil {
				return nil, err
			}
			name, err := cstring(start, body, "FILENAME")
			if err != nil {
				return nil, err
			}
			if err := validName(start, name); err != nil {
				return nil, err
			}
			if len(top.items) > 0 && name <= top.last {
				return nil, formatErr(start, "entry %q out of order after %q", name, top.last)
			}
			top.last = name
			if len(d.stack) >= maxDepth {
				return nil, formatErr(start, "directories nested deeper than %d levels", maxDepth)
			}
			path := name
			if top.e.Path != "" {
				path = top.e.Path + "/" + name
			}
			e, err := d.node(start, name, path)
			if err != nil {
				return nil, err
			}
			if !e.IsDir() {
				top.items = append(top.items, goodbyeItem{hash: NameHash(name), start: start, size: e.End - start})
			}
			return e, nil
		case TypeGoodbye:
			g := d.off
			want := appendGoodbye(nil, top.items, top.e.Offset, g)
			if size != uint64(len(want)) {
				return nil, formatErr(g, "GOODBYE of %q has size %d, want %d for %d entries", "/"+top.e.Path, size, len(want), len(top.items))
			}
			b, err := d.readFull(int(size))
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(b, want) {
				if le.Uint64(b[len(b)-8:]) != GoodbyeTailMarker {
					return nil, formatErr(g, "goodbye tail marker invalid")
				}
				if le.Uint64(b[len(b)-24:]) != uint64(g-top.e.Offset) {
					return nil, formatErr(g, "goodbye tail does not point to the directory's entry")
				}
				return nil, formatErr(g, "goodbye table of %q does not match its entries", "/"+top.e.Path)
			}
			top.e.End = d.off
			d.stack = d.stack[:len(d.stack)-1]
			if len(d.stack) > 0 {
				p := d.stack[len(d.stack)-1]
				p.items = append(p.items, goodbyeItem{hash: NameHash(top.e.Name), start: top.start, size: d.off - top.start})
			}
		default:
			return nil, formatErr(d.off, "expected FILENAME or GOODBYE in directory %q, found %s", "/"+top.e.Path, recordName(typ))
		}
	}
}

// node reads an ENTRY, its metadata and body header.
func (d *Decoder) node(nameOff int64, name, path string) (*Entry, error) {
	off := d.off
	size, typ, err := d.peekHeader()
	if err != nil {
		return nil, err
	}
	if typ != TypeEntry {
		return nil, formatErr(off, "expected ENTRY, found %s", recordName(typ))
	}
	body, err := d.record(size)
	if err != nil {
		return nil, err
	}
	e, err := parseEntry(off, body, d.features)
	if err != nil {
		return nil, err
	}
	if d.features == 0 {
		d.features = e.Features
	}
	e.Name, e.Path, e.NameOffset = name, path, nameOff
	p := nodeParser{e: e}
	for {
		size, typ, err = d.peekHeader()
		if err != nil {
			return nil, err
		}
		if metaStage(typ) == 0 {
			break
		}
		pos := d.off
		b, err := d.record(size)
		if err != nil {
			return nil, err
		}
		if err := p.meta(pos, typ, b); err != nil {
			return nil, err
		}
	}
	if err := p.finishMeta(off); err != nil {
		return nil, err
	}
	e.metaEnd = d.off
	bt := bodyType(e.Mode)
	switch {
	case e.IsDir():
		if typ != TypeFilename && typ != TypeGoodbye {
			return nil, formatErr(d.off, "directory followed by %s", recordName(typ))
		}
		d.stack = append(d.stack, &decDir{e: e, start: nameOff})
		return e, nil
	case bt == 0:
		if typ != TypeFilename && typ != TypeGoodbye {
			return nil, formatErr(d.off, "%s followed by %s", typeName(e.Mode), recordName(typ))
		}
		e.End = d.off
		return e, nil
	case typ != bt:
		return nil, formatErr(d.off, "%s entry followed by %s instead of %s", typeName(e.Mode), recordName(typ), recordName(bt))
	}
	pos := d.off
	if typ == TypePayload {
		if _, err := d.readFull(headerSize); err != nil {
			return nil, err
		}
		e.PayloadOffset, e.Size = d.off, int64(size)-headerSize
		e.End = e.PayloadOffset + e.Size
		d.left = e.Size
		return e, nil
	}
	b, err := d.record(size)
	if err != nil {
		return nil, err
	}
	if err := parseBody(e, pos, typ, b); err != nil {
		return nil, err
	}
	e.End = d.off
	return e, nil
}

// Validate reads a whole archive stream and reports the first problem.
func Validate(r io.Reader) error {
	d := NewDecoder(r)
	for {
		_, err := d.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
