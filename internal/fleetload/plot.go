package fleetload

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws the phases of res into dir: latency p50/p99 per call,
// and where a call's time goes (verify, store, the rest). It returns the
// files written.
func writePlots(res *Result, dir string) ([]string, error) {
	if len(res.Phases) == 0 {
		return nil, nil
	}
	var labels []string
	var p50, p99, verify, store, rest plotter.Values
	for _, p := range res.Phases {
		n := time.Duration(max(p.Calls, 1))
		labels = append(labels, p.Backend+"\n"+p.Call)
		p50 = append(p50, msf(p.P50))
		p99 = append(p99, msf(p.P99))
		verify = append(verify, msf(p.Verify/n))
		store = append(store, msf(p.Store/n))
		rest = append(rest, msf(max(p.Mean-(p.Verify+p.Store)/n, 0)))
	}
	var backends []string
	var perCore plotter.Values
	for _, s := range summarize(res) {
		backends = append(backends, s.backend)
		perCore = append(perCore, s.perCore())
	}
	load := fmt.Sprintf("%d callers, %d replicas, %d cores at load %s", res.Workers, res.Replicas, res.NumCPU, strings.Fields(res.LoadStart + " ?")[0])
	var files []string
	cores, err := bars("Verifications per second of one core, by backend ("+load+")", "verifications/s per core", backends, []series{{"admit, confirm, complete", perCore}}, false)
	if err != nil {
		return nil, err
	}
	lat, err := bars("Latency per call, the caller's ("+load+")", "ms", labels, []series{{"p50", p50}, {"p99", p99}}, false)
	if err != nil {
		return nil, err
	}
	split, err := bars("Where a call's time goes (mean per call)", "ms", labels,
		[]series{{"verify", verify}, {"store", store}, {"gRPC, signing, waiting", rest}}, true)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		p    *plot.Plot
	}{{"fleet-per-core.png", cores}, {"fleet-latency.png", lat}, {"fleet-time.png", split}} {
		path := filepath.Join(dir, f.name)
		if err := f.p.Save(24*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
			return nil, err
		}
		files = append(files, path)
	}
	return files, nil
}

type series struct {
	name   string
	values plotter.Values
}

// bars is a bar chart of the series by label, side by side or stacked.
func bars(title, y string, labels []string, ss []series, stacked bool) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	width := vg.Points(14)
	var below *plotter.BarChart
	for i, s := range ss {
		b, err := plotter.NewBarChart(s.values, width)
		if err != nil {
			return nil, err
		}
		b.Color = plotutil.Color(i)
		b.LineStyle.Color = color.Black
		b.LineStyle.Width = vg.Points(0.5)
		if stacked && below != nil {
			b.StackOn(below)
		} else if !stacked {
			b.Offset = width * vg.Length(2*i-len(ss)+1) / 2
		}
		below = b
		p.Add(b)
		p.Legend.Add(s.name, b)
	}
	p.NominalX(labels...)
	p.Y.Min = 0
	return p, nil
}

func msf(d time.Duration) float64 { return d.Seconds() * 1000 }
