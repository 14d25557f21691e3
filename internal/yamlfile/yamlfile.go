// Package yamlfile decodes the project's YAML files (the daemon's config,
// the appraisal policy) strictly, with errors a person can act on: the line,
// the dotted key, and what is allowed there ("unknown key (known here: …)",
// "want an integer"). It decodes in one pass over the YAML tree, so values
// with their own syntax (types implementing yaml.Unmarshaler, durations)
// are parsed once, at the place their errors can name.
package yamlfile

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is a problem at a place in a YAML file.
type Error struct {
	Line int    // 1-based; 0 when unknown
	Key  string // dotted path, e.g. "trust.snp.measurements[0]"
	Msg  string
	// Kind is a sentinel the error wraps (what the file is: a policy, a
	// config), for errors.Is; nil for none.
	Kind error
}

// Unwrap returns Kind.
func (e *Error) Unwrap() error { return e.Kind }

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Nodes records each decoded node by its dotted path, so that checks made
// after decoding can name the line of the value at fault.
type Nodes map[string]*yaml.Node

// Errorf is an *Error at the node recorded for key (or at its nearest
// recorded parent; line 0 when the key is absent from the file).
func (ns Nodes) Errorf(key, format string, a ...any) *Error {
	line := 0
	for k := key; ; {
		if n, ok := ns[k]; ok {
			line = n.Line
			break
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &Error{Line: line, Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Has reports whether key was given in the file.
func (ns Nodes) Has(key string) bool { _, ok := ns[key]; return ok }

// Decode decodes raw into v, a pointer to a struct whose fields carry yaml
// tags. Unknown keys, keys given twice, aliases, values of the wrong kind
// and values a field's own UnmarshalYAML refuses are *Error values. An empty
// document leaves v as it is, and so does null or "" for a pointer field.
func Decode(raw []byte, v any) (Nodes, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, fmt.Errorf("yamlfile: Decode needs a non-nil pointer, got %T", v)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, syntaxError(err)
	}
	nodes := Nodes{}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nodes, nil
	}
	if err := decode(root.Content[0], rv.Elem(), "", nodes); err != nil {
		return nil, err
	}
	return nodes, nil
}

// syntaxError turns a yaml.v3 error ("yaml: line 3: …") into an *Error.
func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ":"); ok {
			if l, err := strconv.Atoi(n); err == nil {
				e.Line, e.Msg = l, strings.TrimSpace(after)
			}
		}
	}
	return e
}

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[time.Duration]()
)

func decode(n *yaml.Node, v reflect.Value, path string, nodes Nodes) error {
	nodes[path] = n
	at := func(format string, a ...any) error {
		return &Error{Line: n.Line, Key: path, Msg: fmt.Sprintf(format, a...)}
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return at("YAML anchors and aliases are not allowed here")
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if v.Kind() == reflect.Pointer {
		// An optional value given as "" is not given (`host_data: ""`).
		if n.Kind == yaml.ScalarNode && n.Value == "" && n.Tag == "!!str" {
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decode(n, v.Elem(), path, nodes)
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			var ye *Error
			if errors.As(err, &ye) {
				return ye
			}
			return at("%v", err)
		}
		return nil
	}
	if reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		if n.Kind != yaml.ScalarNode {
			return at("want a string")
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return at("%v", err)
		}
		return nil
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			return at("want a duration such as 30s or 15m, got %q", n.Value)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return decodeStruct(n, v, path, nodes)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return at("want a list")
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i), nodes); err != nil {
				return err
			}
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return at("want a mapping")
		}
		kt := v.Type().Key()
		textKey := reflect.PointerTo(kt).Implements(textUnmarshalerType)
		if kt.Kind() != reflect.String && !textKey {
			return fmt.Errorf("yamlfile: map keys of %s must be strings", v.Type())
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return &Error{Line: k.Line, Key: path, Msg: "keys must be strings"}
			}
			var key reflect.Value
			if textKey {
				key = reflect.New(kt)
				if err := key.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(k.Value)); err != nil {
					return &Error{Line: k.Line, Key: join(path, k.Value), Msg: err.Error()}
				}
				key = key.Elem()
			} else {
				key = reflect.ValueOf(k.Value).Convert(kt)
			}
			if m.MapIndex(key).IsValid() {
				return &Error{Line: k.Line, Key: join(path, k.Value), Msg: "key given twice"}
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := decode(n.Content[i+1], elem, join(path, k.Value), nodes); err != nil {
				return err
			}
			m.SetMapIndex(key, elem)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return at("want a string")
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			return at("want true or false")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			lo, hi := intRange(v.Type())
			return at("want an integer from %d to %d, got %q", lo, hi, n.Value)
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&u) != nil || v.OverflowUint(u) {
			return at("want an integer from 0 to %d, got %q", uint64(math.MaxUint64)>>(64-v.Type().Bits()), n.Value)
		}
		v.SetUint(u)
	default:
		return fmt.Errorf("yamlfile: cannot decode into %s", v.Type())
	}
	return nil
}

func intRange(t reflect.Type) (int64, int64) {
	bits := t.Bits()
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func decodeStruct(n *yaml.Node, v reflect.Value, path string, nodes Nodes) error {
	if n.Kind != yaml.MappingNode {
		return &Error{Line: n.Line, Key: path, Msg: "want a mapping"}
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		fi, ok := fields[k.Value]
		if !ok {
			return &Error{Line: k.Line, Key: kp, Msg: "unknown key (known here: " + strings.Join(names, ", ") + ")"}
		}
		if seen[k.Value] {
			return &Error{Line: k.Line, Key: kp, Msg: "key given twice"}
		}
		seen[k.Value] = true
		if err := decode(val, v.Field(fi), kp, nodes); err != nil {
			return err
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
