// A deliberately tiny fake DOM: just enough of the API run_panel.js uses to
// render into, so node tests can drive `render` without npm packages.
// It lives outside test/ because node --test runs every .js file under test/.
//
// Assigning innerHTML/outerHTML throws: the panel must never use it.

class FakeNode {
  constructor(doc) {
    this.ownerDocument = doc;
    this.parentNode = null;
  }

  get nextSibling() {
    if (!this.parentNode) return null;
    const siblings = this.parentNode.childNodes;
    return siblings[siblings.indexOf(this) + 1] || null;
  }

  remove() {
    if (this.parentNode) this.parentNode.removeChild(this);
  }
}

class FakeText extends FakeNode {
  constructor(doc, data) {
    super(doc);
    this.data = String(data);
  }

  get textContent() {
    return this.data;
  }
}

// Compound selectors only: tag, .class, [attr] and [attr="value"], e.g.
// 'button.ag-cancel' or 'tr[data-run-id="x"]'. No combinators.
function parseSelector(selector) {
  const re = /^([a-z0-9]+)?((?:\.[\w-]+|\[[\w-]+(?:="[^"]*")?\])*)$/i;
  const m = re.exec(selector.trim());
  if (!m) throw new Error(`fake DOM cannot parse selector ${selector}`);
  const classes = [...m[2].matchAll(/\.([\w-]+)/g)].map((x) => x[1]);
  const attrs = [...m[2].matchAll(/\[([\w-]+)(?:="([^"]*)")?\]/g)].map((x) => [x[1], x[2]]);
  return { tag: m[1] && m[1].toLowerCase(), classes, attrs };
}

class FakeElement extends FakeNode {
  constructor(doc, tag) {
    super(doc);
    this.tagName = tag.toUpperCase();
    this.childNodes = [];
    this.attributes = new Map();
    this.listeners = new Map();
    this.style = {};
    this.hidden = false;
    this.disabled = false;
    this.open = false;
    this.value = "";
    const self = this;
    this.classList = {
      contains: (c) => self.className.split(/\s+/).includes(c),
      add: (c) => self.classList.toggle(c, true),
      remove: (c) => self.classList.toggle(c, false),
      toggle(c, force) {
        const set = new Set(self.className.split(/\s+/).filter(Boolean));
        const on = force === undefined ? !set.has(c) : Boolean(force);
        if (on) set.add(c);
        else set.delete(c);
        self.className = [...set].join(" ");
        return on;
      },
    };
  }

  get className() {
    return this.getAttribute("class") || "";
  }

  set className(v) {
    this.setAttribute("class", v);
  }

  set innerHTML(_v) {
    throw new Error("innerHTML must not be used");
  }

  set outerHTML(_v) {
    throw new Error("outerHTML must not be used");
  }

  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }

  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }

  removeAttribute(name) {
    this.attributes.delete(name);
  }

  get children() {
    return this.childNodes.filter((n) => n instanceof FakeElement);
  }

  get firstChild() {
    return this.childNodes[0] || null;
  }

  get textContent() {
    return this.childNodes.map((n) => n.textContent).join("");
  }

  set textContent(v) {
    for (const n of this.childNodes) n.parentNode = null;
    this.childNodes = [];
    if (v !== "" && v !== null && v !== undefined) this.appendChild(new FakeText(this.ownerDocument, v));
  }

  insertBefore(node, ref) {
    if (node.parentNode) node.parentNode.removeChild(node);
    const at = ref ? this.childNodes.indexOf(ref) : -1;
    if (ref && at < 0) throw new Error("insertBefore: ref is not a child");
    if (at < 0) this.childNodes.push(node);
    else this.childNodes.splice(at, 0, node);
    node.parentNode = this;
    this.ownerDocument.mutations += 1;
    return node;
  }

  appendChild(node) {
    return this.insertBefore(node, null);
  }

  append(...nodes) {
    for (const n of nodes) this.appendChild(n);
  }

  removeChild(node) {
    const at = this.childNodes.indexOf(node);
    if (at < 0) throw new Error("removeChild: not a child");
    this.childNodes.splice(at, 1);
    node.parentNode = null;
    this.ownerDocument.mutations += 1;
    return node;
  }

  matches(selector) {
    const { tag, classes, attrs } = parseSelector(selector);
    if (tag && this.tagName.toLowerCase() !== tag) return false;
    if (!classes.every((c) => this.classList.contains(c))) return false;
    return attrs.every(([k, v]) => (v === undefined ? this.attributes.has(k) : this.getAttribute(k) === v));
  }

  closest(selector) {
    for (let n = this; n instanceof FakeElement; n = n.parentNode) if (n.matches(selector)) return n;
    return null;
  }

  querySelectorAll(selector) {
    const out = [];
    const walk = (n) => {
      for (const c of n.children) {
        if (c.matches(selector)) out.push(c);
        walk(c);
      }
    };
    walk(this);
    return out;
  }

  querySelector(selector) {
    return this.querySelectorAll(selector)[0] || null;
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  removeEventListener(type, fn) {
    const list = this.listeners.get(type) || [];
    this.listeners.set(type, list.filter((f) => f !== fn));
  }

  /** Dispatch a bubbling event of `type` with this element as target (`props`: e.g. key). */
  dispatch(type, props = {}) {
    const event = {
      type,
      target: this,
      defaultPrevented: false,
      preventDefault() {
        this.defaultPrevented = true;
      },
      stopPropagation() {},
      ...props,
    };
    for (let n = this; n; n = n.parentNode) {
      for (const fn of n.listeners?.get(type) || []) fn(event);
    }
    return event;
  }

  /** Count of event listeners still attached (for cleanup checks). */
  listenerCount() {
    let total = 0;
    for (const list of this.listeners.values()) total += list.length;
    for (const c of this.children) total += c.listenerCount();
    return total;
  }
}

export class FakeDocument {
  constructor() {
    this.mutations = 0; // insertions/removals of child nodes, for "in place" checks
  }

  createElement(tag) {
    return new FakeElement(this, tag);
  }

  createTextNode(data) {
    return new FakeText(this, data);
  }
}

/** A stand-in for an anywidget model: records sends, lets tests emit events. */
export class FakeModel {
  constructor(traits = {}) {
    this.traits = { ...traits };
    this.handlers = new Map();
    this.sent = [];
  }

  get(name) {
    return this.traits[name];
  }

  set(name, value) {
    this.traits[name] = value;
    this.emit(`change:${name}`);
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
  }

  off(name, fn) {
    this.handlers.set(name, (this.handlers.get(name) || []).filter((f) => f !== fn));
  }

  emit(name, ...args) {
    for (const fn of this.handlers.get(name) || []) fn(...args);
  }

  handlerCount() {
    let total = 0;
    for (const list of this.handlers.values()) total += list.length;
    return total;
  }

  send(message) {
    this.sent.push(message);
  }
}
