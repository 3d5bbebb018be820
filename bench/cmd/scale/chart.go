package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// series is one line of a panel: a cost at each size.
type series struct {
	name string
	xy   plotter.XYs
}

// chart writes one SVG with a panel per part, each cost per unit against
// the size on a log scale: the gateway's memory per agent, the caller's
// CPU with that many instances, and the server's memory per idle
// connection of each transport.
func chart(r report, path string) error {
	var panels []*plot.Plot
	if len(r.Agents) > 0 {
		rss, heap := series{name: "gateway RSS per agent"}, series{name: "gateway heap per agent"}
		for _, f := range r.Agents {
			if f.Variant != "" {
				continue // the storm variants repeat the largest size
			}
			rss.xy = append(rss.xy, plotter.XY{X: float64(f.Agents), Y: f.RSSPerAgent / 1024})
			heap.xy = append(heap.xy, plotter.XY{X: float64(f.Agents), Y: f.HeapPerAgent / 1024})
		}
		p, err := panel(fmt.Sprintf("Agents (%s sessions each)", r.Settings["sessions_per_agent"]), "agents", "KiB per agent", rss, heap)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(r.Instances) > 0 {
		cpu, req := series{name: "caller CPU (ms/s)"}, series{name: "etcd requests/s"}
		for _, f := range r.Instances {
			cpu.xy = append(cpu.xy, plotter.XY{X: float64(f.Instances), Y: f.CallerCPU})
			req.xy = append(req.xy, plotter.XY{X: float64(f.Instances), Y: f.EtcdReqPerSec})
		}
		p, err := panel("Instances in etcd (one caller)", "registrations", "per second", cpu, req)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(r.Conns) > 0 {
		var ss []series
		byKind := map[string]int{}
		for _, f := range r.Conns {
			if f.Open == 0 {
				continue
			}
			i, ok := byKind[f.Kind]
			if !ok {
				i = len(ss)
				byKind[f.Kind] = i
				ss = append(ss, series{name: f.Kind})
			}
			ss[i].xy = append(ss[i].xy, plotter.XY{X: float64(f.Open), Y: f.RSSPerConn / 1024})
		}
		p, err := panel("Idle connections (server)", "connections", "KiB RSS per connection", ss...)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return nil
	}
	w, h := vg.Length(len(panels))*4.5*vg.Inch, 3.6*vg.Inch
	c := vgsvg.New(w, h)
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// panel is one chart: lines with points, sizes on a log scale.
func panel(title, x, y string, ss ...series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	for i, s := range ss {
		if len(s.xy) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(s.xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	// Room above the lines for the legend.
	top := 0.0
	for _, s := range ss {
		for _, xy := range s.xy {
			top = max(top, xy.Y)
		}
	}
	p.Y.Max = 1.45 * top
	p.Add(plotter.NewGrid())
	return p, nil
}
