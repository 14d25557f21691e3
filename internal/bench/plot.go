package bench

import (
	"fmt"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws the series of res into dir and returns the files
// written: Extend latency and bundle size by events, Attest throughput and
// wait by callers. A series without data is left out.
func writePlots(res *Results, dir string) ([]string, error) {
	var files []string
	save := func(p *plot.Plot, name string) error {
		path := filepath.Join(dir, name)
		if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
			return err
		}
		files = append(files, path)
		return nil
	}
	if e := res.Events; e != nil && len(e.Curve) > 0 {
		pts := plotter.XYs{}
		for _, c := range e.Curve {
			pts = append(pts, plotter.XY{X: float64(c.Events), Y: ms64(c.Latency)})
		}
		p := newPlot("Extend latency by event number (median of up to 100 events)", "event number", "Extend over gRPC on swtpm (ms)", true, false)
		if err := addLine(p, "", pts, 0); err != nil {
			return nil, err
		}
		p.Y.Min = 0
		if err := save(p, "extend-latency.png"); err != nil {
			return nil, err
		}
	}
	if e := res.Events; e != nil {
		pts := plotter.XYs{}
		for _, pt := range e.Points {
			if pt.BundleBytes > 0 && pt.Reached > 0 {
				pts = append(pts, plotter.XY{X: float64(pt.Reached), Y: float64(pt.BundleBytes) / 1000})
			}
		}
		if len(pts) > 0 {
			p := newPlot("Bundle size (GetBundle after Complete) by events recorded", "events recorded", "bundle (KB)", true, true)
			if err := addLine(p, "", pts, 0); err != nil {
				return nil, err
			}
			if err := save(p, "bundle-size.png"); err != nil {
				return nil, err
			}
		}
	}
	if c := res.Concurrency; c != nil && len(c.Levels) > 0 {
		rate, p50, p99 := plotter.XYs{}, plotter.XYs{}, plotter.XYs{}
		var ticks []plot.Tick
		for _, l := range c.Levels {
			if l.Done == 0 {
				continue
			}
			x := float64(l.Callers)
			ticks = append(ticks, plot.Tick{Value: x, Label: fmt.Sprint(l.Callers)})
			rate = append(rate, plotter.XY{X: x, Y: l.PerSec})
			p50 = append(p50, plotter.XY{X: x, Y: l.Wait.P50.Seconds()})
			p99 = append(p99, plotter.XY{X: x, Y: l.Wait.P99.Seconds()})
		}
		if len(rate) > 0 {
			title := fmt.Sprintf("Attest throughput by concurrent callers (TPM: %v per command)", c.Delay)
			p := newPlot(title, "concurrent callers (each its own connection)", "attestations/s", true, false)
			p.X.Tick.Marker = plot.ConstantTicks(ticks)
			if err := addLine(p, "", rate, 0); err != nil {
				return nil, err
			}
			p.Y.Min = 0
			if err := save(p, "throughput.png"); err != nil {
				return nil, err
			}
			w := newPlot(fmt.Sprintf("Attest wait by concurrent callers (TPM: %v per command)", c.Delay), "concurrent callers (each its own connection)", "wait per call (s)", true, false)
			w.X.Tick.Marker = plot.ConstantTicks(ticks)
			w.Y.Min = 0
			if err := addLine(w, "p50", p50, 0); err != nil {
				return nil, err
			}
			if err := addLine(w, "p99", p99, 1); err != nil {
				return nil, err
			}
			if err := save(w, "wait.png"); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

func newPlot(title, x, y string, logX, logY bool) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Title.Padding = vg.Points(6)
	p.Legend.Top = false // bottom right: the curves here grow
	p.Legend.Left = false
	return p
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, style int) error {
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	c := plotutil.Color(style)
	l.Color, s.Color = c, c
	l.Width = vg.Points(1.5)
	s.Shape = plotutil.Shape(style)
	p.Add(l, s)
	if name != "" {
		p.Legend.Add(name, l, s)
	}
	return nil
}

func ms64(d time.Duration) float64 { return d.Seconds() * 1000 }
