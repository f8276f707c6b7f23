// The device page's history: a chart per numeric datastream over a chosen range (last hour, day
// or week) on a real time axis, drawn by uPlot (vendored under /assets/vendor, no build step),
// and a CSV/JSON download of each pin's history through the export API.
'use strict';

const HISTORY_RANGES = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };

const charts = {
  range: '1h',
  device: null,        // id of the device the charts belong to
  plots: new Map(),    // pin -> { plot, times, values, holder }
};

function isCharted(datastream) {
  return datastream.kind !== 'command' && (datastream.type === 'integer' || datastream.type === 'double');
}

/** The history card of a device page; the charts fill in once it is in the page. */
function historySection(details, authorized) {
  for (const { plot } of charts.plots.values()) plot.destroy();
  charts.plots = new Map();
  charts.device = details.id;
  const charted = details.datastreams.filter(isCharted);
  const rangeButtons = Object.keys(HISTORY_RANGES).map((range) => el('button', {
    type: 'button', class: 'small secondary', 'data-range': range, 'aria-pressed': String(range === charts.range),
    onclick: () => { charts.range = range; loadCharts(details, authorized); },
  }, { '1h': 'Last hour', '24h': 'Last day', '7d': 'Last week' }[range]));
  const body = charted.length
    ? charted.map((datastream) => el('figure', { class: 'chart', 'data-chart': datastream.pin },
      el('figcaption', {}, el('span', {}, `${datastream.name} (${datastream.pin})`),
        el('span', { class: 'downloads' },
          ['csv', 'json'].map((format) => el('button', {
            type: 'button', class: 'small secondary', 'data-export': datastream.pin, 'data-format': format,
            onclick: () => download(details, datastream.pin, format, authorized),
          }, format.toUpperCase())))),
      el('div', { class: 'plot', 'data-plot': datastream.pin }),
      el('p', { class: 'muted empty', 'data-empty': datastream.pin, hidden: true }, 'No values in this range.')))
    : [el('p', { class: 'muted' }, 'No numeric datastreams to chart.')];
  return el('section', { class: 'card history', id: 'history' },
    el('div', { class: 'head' }, el('h2', {}, 'History'), el('div', { class: 'ranges' }, rangeButtons)),
    body);
}

function historyPath(device, pin, format, from) {
  return `/api/devices/${device}/history/${pin}?from=${Math.floor(from)}&format=${format}`;
}

async function loadCharts(details, authorized) {
  for (const button of document.querySelectorAll('[data-range]')) {
    button.setAttribute('aria-pressed', String(button.dataset.range === charts.range));
  }
  const from = Date.now() - HISTORY_RANGES[charts.range];
  await Promise.all(details.datastreams.filter(isCharted).map(async (datastream) => {
    const response = await authorized(historyPath(details.id, datastream.pin, 'json', from));
    const points = await response.json();
    const times = [];
    const values = [];
    for (const point of points) {
      const number = Number(Array.isArray(point.value) ? point.value[0] : point.value);
      if (!Number.isFinite(number)) continue;
      times.push(point.at / 1000);
      values.push(number);
    }
    drawChart(datastream.pin, times, values, from);
  }));
}

function drawChart(pin, times, values, from) {
  const holder = document.querySelector(`[data-plot="${pin}"]`);
  if (!holder) return;
  let entry = charts.plots.get(pin);
  const scale = { min: from / 1000, max: Date.now() / 1000 };
  if (!entry) {
    const plot = new uPlot({
      width: Math.max(280, holder.clientWidth || 600),
      height: 180,
      scales: { x: { time: true, range: () => [charts.scaleMin, charts.scaleMax] } },
      series: [{}, { label: pin, stroke: '#1f7ae0', width: 1.5, points: { show: true, size: 4 } }],
      axes: [{}, { size: 50 }],
      legend: { show: false },
    }, [times, values], holder);
    entry = { plot, times, values, holder };
    charts.plots.set(pin, entry);
  }
  charts.scaleMin = scale.min;
  charts.scaleMax = scale.max;
  entry.times = times;
  entry.values = values;
  entry.plot.setData([times, values]);
  showCount(pin, entry);
}

/** What the chart holds, in attributes (for people with assistive technology, and for tests). */
function showCount(pin, entry) {
  const figure = document.querySelector(`[data-chart="${pin}"]`);
  if (!figure) return;
  figure.dataset.points = String(entry.values.length);
  figure.dataset.last = entry.values.length ? String(entry.values[entry.values.length - 1]) : '';
  figure.setAttribute('aria-label', `${entry.values.length} values of ${pin}`);
  const empty = figure.querySelector('[data-empty]');
  if (empty) empty.hidden = entry.values.length > 0;
}

/** A live value of the open device: appended to its chart when it is in the range. */
function chartValue(device, pin, value, at) {
  const entry = charts.plots.get(pin);
  if (!entry || device !== charts.device) return;
  const number = Number(Array.isArray(value) ? value[0] : value);
  if (!Number.isFinite(number)) return;
  entry.times = entry.times.concat(at / 1000);
  entry.values = entry.values.concat(number);
  charts.scaleMax = Math.max(charts.scaleMax, at / 1000);
  entry.plot.setData([entry.times, entry.values]);
  showCount(pin, entry);
}

/** Downloads a pin's history in the chosen range through the export API. */
async function download(details, pin, format, authorized) {
  const from = Date.now() - HISTORY_RANGES[charts.range];
  const response = await authorized(historyPath(details.id, pin, format, from));
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: `${details.name}-${pin}-${charts.range}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
